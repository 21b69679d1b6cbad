"""Training metrics: a running window of update statistics and the metrics.jsonl log."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

from nmt.errors import OutputError, TrainingError
from nmt.files import atomic_write


class Window:
    """Accumulates update statistics between two log records."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss = self.nll = 0.0
        self.tgt_tokens = self.src_tokens = self.slots = self.updates = 0
        self.grad_norm = 0.0
        self.seconds = 0.0

    def add(self, stats) -> None:
        if not stats.finite:
            return
        self.loss += stats.loss
        self.nll += stats.nll
        self.tgt_tokens += stats.tgt_tokens
        self.src_tokens += stats.src_tokens
        self.slots += stats.slots
        self.grad_norm += stats.grad_norm
        self.seconds += stats.seconds
        self.updates += 1

    def summary(self) -> dict:
        """Per-token loss/nll (nats), perplexity = exp(nll), throughput and padding."""
        seconds = max(self.seconds, 1e-9)  # update time only: validation is not throughput
        tokens = max(self.tgt_tokens, 1)
        nll = self.nll / tokens
        real = self.tgt_tokens + self.src_tokens
        return {
            "loss": self.loss / tokens,
            "nll": nll,
            "ppl": math.exp(min(nll, 50.0)),
            "tgt_tokens_per_s": self.tgt_tokens / seconds,
            "tokens_per_s": real / seconds,
            "padding": 1.0 - real / self.slots if self.slots else 0.0,
            "grad_norm": self.grad_norm / max(self.updates, 1),
            "updates": self.updates,
        }


class MetricsLog:
    """Appends one JSON record per line: {"kind": "train"|"valid", "time": ..., ...}."""

    def __init__(self, path: Path, *, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, kind: str, record: dict) -> None:
        if not self.enabled:
            return
        line = json.dumps({"kind": kind, "time": round(time.time(), 3)} | record)
        with _stop_on_os_error(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a resumed run starts from)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        try:
            with atomic_write(self.path) as f:
                f.write("".join(json.dumps(r) + "\n" for r in kept))
        except OutputError as exc:
            raise TrainingError(str(exc)) from exc


@contextlib.contextmanager
def _stop_on_os_error(path: Path):
    """A full disk (or a read-only run directory) stops training with one clear message
    instead of a traceback; the last checkpoint is intact and a rerun resumes from it."""
    try:
        yield
    except OSError as exc:
        raise TrainingError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_metrics(path: Path) -> list[dict]:
    """Records of a metrics.jsonl; a line cut short by a crash is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records
