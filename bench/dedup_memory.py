"""Memory of `prepare`'s dedup at millions of pairs: nmt's SeenHashes against a Python set.

    python bench/dedup_memory.py --pairs 1000000 5000000

Each run is its own process: it streams `--pairs` pairs (Multi30k train + newstest
2012-2018 de-en, repeated with the repetition number appended, as bench/scaling.py --pairs
builds them) and adds each pair's hash to `nmt.data.clean.SeenHashes`, the set that
`filter_pairs` dedups with (every pair is distinct, so every hash is held), or to a plain
Python `set` (dedup before SeenHashes), or to nothing (`none`, the baseline). Reports
seconds and the process's peak RSS (VmHWM).
Writes bench/results/dedup_memory.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import corpus
import record

import nmt

_RUN = """
import itertools, re, sys, time
from pathlib import Path
from nmt.data.clean import SeenHashes
from nmt.data.text import iter_lines

kind, pairs, root = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
bases = [root / "multi30k" / "train.de"] + sorted((root / "wmt_newstest" / "de-en").glob("*.de"))

def numbered():
    for copy in itertools.count():
        suffix = f" {copy}" if copy else ""
        for de in bases:
            for s, t in zip(iter_lines(de), iter_lines(de.with_suffix(".en"))):
                yield s + suffix, t + suffix

stream = itertools.islice(numbered(), pairs)
started = time.perf_counter()
seen = SeenHashes() if kind == "seenhashes" else set()
kept = 0
for s, t in stream:
    key = hash((s, t))
    if kind == "seenhashes":
        kept += seen.add(key)
    elif kind == "set":
        if key not in seen:
            seen.add(key)
            kept += 1
    else:
        kept += 1
seconds = time.perf_counter() - started
with open("/proc/self/status") as f:
    peak = int(re.search(r"VmHWM:\\s+(\\d+)", f.read()).group(1))
print(kept, seconds, peak)
"""


def measure(kind: str, pairs: int, data_root: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _RUN, kind, str(pairs), str(data_root)],
        capture_output=True,
        text=True,
        check=True,
    )
    kept, seconds, peak_kib = done.stdout.split()
    return {
        "dedup": kind,
        "pairs": pairs,
        "kept": int(kept),
        "seconds": float(seconds),
        "peak_rss_mb": int(peak_kib) / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", nargs="+", type=int, default=[1_000_000, 5_000_000])
    p.add_argument("--kinds", nargs="+", default=["none", "set", "seenhashes"])
    p.add_argument("--data-root", type=Path, default=corpus.DATA_ROOT)
    p.add_argument("--output", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="smoke run: 20,000 pairs")
    args = p.parse_args()
    args.output = record.output_path("dedup_memory", output=args.output, quick=args.quick)
    if args.quick:
        args.pairs = [20_000]
    rows = []
    for pairs in args.pairs:
        for kind in args.kinds:
            print(f"{kind} {pairs} ...", file=sys.stderr, flush=True)
            rows.append(measure(kind, pairs, args.data_root))
    out = record.machine() | {
        "benchmark": "dedup_memory",
        "command": " ".join(["python", "bench/dedup_memory.py", *sys.argv[1:]]),
        "versions": {"nmt": nmt.__version__},
        "results": rows,
    }
    print(f"record: {record.write(out, args.output)}", file=sys.stderr)
    print(
        record.table(
            ["dedup", "pairs", "seconds", "peak RSS MB"],
            [[r["dedup"], r["pairs"], r["seconds"], r["peak_rss_mb"]] for r in rows],
        )
    )


if __name__ == "__main__":
    main()
