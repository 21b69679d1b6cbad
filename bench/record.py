"""What every benchmark record holds: machine, versions, settings, and median/min/max figures.

A figure measured over N runs is summarised as {"median", "min", "max", "runs"}. Rates are
computed per run (work / seconds), then summarised, so min and max are real runs too.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
now = time.perf_counter  # the clock of every timed section


def cpu_model() -> str:
    """The 'model name' line of /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU's vector instruction set flags (avx, avx2, avx512*, amx*) from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return sorted(f for f in set(flags) if f.startswith(("avx", "amx")))


def vector_isa(flags: Sequence[str] | None = None) -> str:
    """The widest x86 vector instruction set: "AVX-512" (avx512f), "AVX2" or "neither". Rankings
    against CTranslate2 flip between AVX2 and AVX-512, so every record says which. (The first
    `avx...` flag in /proc/cpuinfo is avx2 even on an AVX-512 CPU: look for avx512f itself.)"""
    flags = cpu_flags() if flags is None else flags
    if "avx512f" in flags:
        return "AVX-512"
    return "AVX2" if "avx2" in flags else "neither AVX2 nor AVX-512"


def machine() -> dict:
    """Date, host, CPU, GPU and the versions every record carries."""
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "isa": vector_isa(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def summary(values: Sequence[float]) -> dict:
    """{"median", "min", "max", "runs"} of a list of measurements."""
    values = list(values)
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
    }


def rates(work: float, seconds: Sequence[float]) -> dict:
    """summary() of work / seconds for each run (sentences/s, tokens/s, ...)."""
    return summary([work / s for s in seconds])


def output_path(name: str, *, output: Path | None, quick: bool) -> Path:
    """Where a run's record goes: `output`, else bench/results/<name>.json, or for a --quick
    smoke run bench/results/<name>-quick.tmp (git-ignored: only full runs are committed)."""
    if output is not None:
        return output
    return RESULTS / (f"{name}-quick.tmp" if quick else f"{name}.json")


def write(record: dict, path: Path) -> Path:
    """Write `record` as JSON to `path`, atomically (via a .tmp beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join([first] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return "-" if value is None else str(value)
