"""nmt's CPU memory settings (nmt/memory.py) against the alternatives, on training updates.

    python bench/memory_settings.py                 # small, 12 updates, 2 rounds
    python bench/memory_settings.py --size base
    python bench/memory_settings.py --quick         # smoke run

Each setting needs a fresh process (glibc and PyTorch read theirs once), so each round starts
one worker process per setting, in turn, on train_speed.py's batches and update:

    glibc defaults               PyTorch's and glibc's defaults, as HF's users run
    huge pages                   THP_MEM_ALLOC_ENABLE=1 (nmt's command line before 2026-11-24)
    freed memory kept            nmt's command line now (nmt.memory.configure_cpu_memory)
    kept + huge pages            both

A worker runs --warmup updates, then --updates more, timed, and reports seconds and minor
page faults per timed update (getrusage) and its peak RSS. The warm-up lets a heap that keeps
freed memory grow to its steady size, as in a real training run of thousands of updates.
Prints a table last and writes bench/results/memory_settings.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import record
from models import SIZES

SETTINGS = {
    "glibc defaults": {"THP_MEM_ALLOC_ENABLE": "0", "keep": False},
    "huge pages": {"THP_MEM_ALLOC_ENABLE": "1", "keep": False},
    "freed memory kept": {"THP_MEM_ALLOC_ENABLE": None, "keep": True},
    "kept + huge pages": {"THP_MEM_ALLOC_ENABLE": "1", "keep": True},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--warmup", type=int, default=6)
    p.add_argument("--updates", type=int, default=12)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 + 2 updates, 1 round")
    p.add_argument(
        "--output", type=Path, default=None, help="default: bench/results/memory_settings.json"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.updates, args.repeats = 1, 2, 1
    return args


def worker(args: argparse.Namespace) -> None:
    """One setting, in this fresh process: time the updates, print one JSON line."""
    from nmt.memory import keep_freed_memory

    kept = keep_freed_memory() if SETTINGS[args.worker]["keep"] else False
    import torch
    from models import build_nmt
    from train_speed import NmtTrainer, epoch_batches
    from train_speed import parse_args as train_speed_args

    torch.set_num_threads(args.threads)
    shared = train_speed_args(
        ["--warmup", str(args.warmup), "--updates", str(args.updates), "--no-peers"]
    )
    batches, stats = epoch_batches(shared)
    model = build_nmt(args.size, vocab_size=shared.vocab, seed=shared.seed)
    trainer = NmtTrainer(model, batches, device=torch.device("cpu"), lr=5e-4, compile_model=False)
    trainer.run(0, args.warmup)
    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds = trainer.run(args.warmup, args.updates)["seconds"]
    after = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "kept": kept,
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "seconds_per_update": seconds / args.updates,
        "faults_per_update": (after.ru_minflt - before.ru_minflt) / args.updates,
        "peak_rss_mb": after.ru_maxrss / 1024,
        "tgt_tokens": stats["timed_tgt_tokens"],
    }
    print(json.dumps(result))


def run_worker(args: argparse.Namespace, setting: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    thp = SETTINGS[setting]["THP_MEM_ALLOC_ENABLE"]
    if thp is not None:
        env["THP_MEM_ALLOC_ENABLE"] = thp
    command = [sys.executable, __file__, "--worker", setting, "--size", args.size]
    command += ["--warmup", str(args.warmup), "--updates", str(args.updates)]
    command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"worker {setting!r} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):
        for name in SETTINGS:
            runs[name].append(run_worker(args, name))
    results = {}
    for name, reports in runs.items():
        results[name] = {
            key: record.summary([r[key] for r in reports])
            for key in ("seconds_per_update", "faults_per_update", "peak_rss_mb")
        } | {"kept": reports[0]["kept"], "THP_MEM_ALLOC_ENABLE": reports[0]["THP_MEM_ALLOC_ENABLE"]}
    out = {
        "machine": record.machine(),
        "settings": vars(args) | {"output": None},
        "results": results,
    }
    path = record.output_path("memory_settings", output=args.output, quick=args.quick)
    print(f"record: {record.write(out, path)}", file=sys.stderr)
    base = results["glibc defaults"]["seconds_per_update"]["median"]
    rows = [
        [
            name,
            f"{r['seconds_per_update']['median']:.3f}",
            f"{base / r['seconds_per_update']['median']:.2f}x",
            f"{r['faults_per_update']['median']:.0f}",
            f"{r['peak_rss_mb']['median']:.0f}",
        ]
        for name, r in results.items()
    ]
    print(
        f"\n{args.size} training updates on the CPU, {args.warmup} warm-up then {args.updates} "
        f"timed, {args.threads} threads, medians of {args.repeats} processes per setting"
    )
    print(record.table(["setting", "s/update", "speed", "faults/update", "peak RSS MB"], rows))


if __name__ == "__main__":
    main()
