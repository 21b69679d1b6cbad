"""Checkpoint averaging chosen on the dev set: the `train.average_last` a run's config should use.

    python bench/average_sweep.py RUN_DIR --output bench/results/<name>/average_sweep.json

For N = 1 (the last step checkpoint alone) up to --max-last, the run's last N step checkpoints
are averaged (`nmt average`) and the result is scored on the whole dev split, beam 5
(`nmt evaluate`); `best.pt` (what a run evaluates without averaging) is scored too. The N with
the highest dev BLEU is the choice. Only then are the test splits scored, for that choice and
for `best.pt`: test sets report, they never choose.

The raw dev and test files come from --data-root (the offline mirror: <corpus>/<split>.<lang>);
the split names, languages and decoding settings from the run's config.yaml. Commands run with
the CLI a user has, so the figures are what `nmt run` with `train.average_last: N` gives.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import record
import yaml

BENCH = Path(__file__).resolve().parent
DEFAULT_DATA = Path(os.environ.get("NMT_SHARED_DATA", BENCH.parent.parent / "shared" / "data"))
NMT = [sys.executable, "-m", "nmt.cli"]


def step_checkpoints(run_dir: Path) -> list[Path]:
    """The run's step_N.pt files, oldest first."""
    found = (run_dir / "checkpoints").glob("step_*.pt")
    return sorted(found, key=lambda p: int(p.stem.split("_")[1]))


def nmt(*args: object) -> str:
    done = subprocess.run([*NMT, *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"nmt {' '.join(map(str, args))} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def score(checkpoint: Path, src: Path, ref: Path, beam: int) -> dict:
    """`nmt evaluate --json` of one checkpoint on one file pair: BLEU, chrF, what decoded."""
    result = json.loads(
        nmt("evaluate", checkpoint, "--src", src, "--ref", ref, "--beam-size", beam, "--json")
    )
    return {
        "bleu": result["bleu"]["score"],
        "bleu_text": result["bleu"]["text"],
        "bleu_signature": result["bleu"]["signature"],
        "chrf": result["chrf"]["score"],
        "checkpoint": result["checkpoint"],
        "hypotheses": result["hypotheses"],
    }


def averaged(chosen: list[Path], folder: Path) -> Path:
    """The mean of `chosen` (one file: itself), written by `nmt average`."""
    if len(chosen) == 1:
        return chosen[0]
    out = folder / f"last{len(chosen)}.pt"
    nmt("average", *chosen, "-o", out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--max-last", type=int, default=5, help="largest N to try")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    cfg = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    data, beam = cfg["data"], cfg["decode"]["beam_size"]
    corpus = args.data_root / data["corpus"]

    def files(split: str) -> tuple[Path, Path]:
        return corpus / f"{split}.{data['src_lang']}", corpus / f"{split}.{data['tgt_lang']}"

    steps = step_checkpoints(args.run_dir)
    best = args.run_dir / "checkpoints" / "best.pt"
    dev = files(data["valid_split"])
    rows = {"best.pt": score(best, *dev, beam)}
    print(f"best.pt: dev {rows['best.pt']['bleu_text']}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        candidates = {}
        for n in range(1, min(args.max_last, len(steps)) + 1):
            name = f"last {n}"
            candidates[name] = steps[-n:]
            rows[name] = score(averaged(steps[-n:], Path(tmp)), *dev, beam)
            rows[name]["averaged"] = [p.name for p in steps[-n:]]
            print(f"{name}: dev {rows[name]['bleu_text']}", file=sys.stderr, flush=True)
        choice = max(candidates, key=lambda name: rows[name]["bleu"])
        tests = {}
        for name, checkpoint in (
            ("best.pt", best),
            (choice, averaged(candidates[choice], Path(tmp))),
        ):
            tests[name] = {
                split: score(checkpoint, *files(split), beam) for split in data["test_splits"]
            }
            for split, s in tests[name].items():
                print(f"{name}: {split} {s['bleu_text']}", file=sys.stderr, flush=True)
    result = record.machine() | {
        "benchmark": "average_sweep",
        "command": " ".join(["python", *sys.argv]),
        "run_dir": str(args.run_dir),
        "beam_size": beam,
        "dev_split": data["valid_split"],
        "dev": rows,
        "choice": choice,
        "test": tests,
    }
    print(f"wrote {record.write(result, args.output)}")


if __name__ == "__main__":
    main()
