"""What int8 costs in quality and buys in speed, on a trained checkpoint.

    python bench/int8_quality.py runs/multi30k_de_en/checkpoints/best.pt \
        --data-dir ../shared/data/multi30k --splits test_2016_flickr test_2017_flickr

Each split is translated twice by nmt's `Engine` (the code `nmt translate` runs), with
the checkpoint's float32 weights and with `decode.quantize=int8` (dynamic int8 linears, see
nmt/decoding/quantize.py), same beam and batching, and scored with sacreBLEU against the
reference (BLEU 13a, cased, and chrF). Reported per split: both scores, their difference,
the share of identical output lines, and the decoding time of each (the float32 and int8
passes alternate, so a slower moment of the machine hits both). Prints a table last and
writes bench/results/int8_quality.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import corpus
import record
import sacrebleu
import torch

import nmt
from nmt.data.text import read_lines
from nmt.decoding.engine import Engine
from nmt.decoding.options import DecodeOptions

MODES = ("none", "int8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data-dir", type=Path, default=corpus.DATA_ROOT / "multi30k")
    p.add_argument("--src-lang", default="de")
    p.add_argument("--tgt-lang", default="en")
    p.add_argument("--splits", nargs="+", default=["test_2016_flickr", "test_2017_flickr"])
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="first N lines of each split (0: all)")
    p.add_argument("--output", type=Path, default=record.RESULTS / "int8_quality.json")
    return p.parse_args(argv)


def translate(translator: Engine, lines: list[str]) -> tuple[list[str], float]:
    started = record.now()
    result = translator.translate(lines)
    return result.best, record.now() - started


def score(hyps: list[str], refs: list[str]) -> dict:
    return {
        "bleu": sacrebleu.corpus_bleu(hyps, [refs]).score,
        "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
    }


def run_split(translators: dict[str, Engine], args, split: str) -> dict:
    src = read_lines(args.data_dir / f"{split}.{args.src_lang}")
    ref = read_lines(args.data_dir / f"{split}.{args.tgt_lang}")
    if args.limit:
        src, ref = src[: args.limit], ref[: args.limit]
    outputs, seconds = {}, {}
    for mode, translator in translators.items():  # alternate: none, int8
        outputs[mode], seconds[mode] = translate(translator, src)
    scores = {mode: score(outputs[mode], ref) for mode in translators}
    same = sum(a == b for a, b in zip(outputs["none"], outputs["int8"]))
    return {
        "split": split,
        "lines": len(src),
        "scores": scores,
        "bleu_loss": scores["none"]["bleu"] - scores["int8"]["bleu"],
        "chrf_loss": scores["none"]["chrf"] - scores["int8"]["chrf"],
        "identical_lines": same / len(src),
        "seconds": seconds,
        "int8_speedup": seconds["none"] / seconds["int8"],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    translators = {
        mode: Engine.from_checkpoint(
            args.checkpoint, DecodeOptions(quantize=mode, beam_size=args.beam)
        )
        for mode in MODES
    }
    translate(translators["int8"], ["Ein Hund läuft."])  # warm-up of both paths
    translate(translators["none"], ["Ein Hund läuft."])
    splits = [run_split(translators, args, split) for split in args.splits]
    result = record.machine() | {
        "benchmark": "int8_quality",
        "command": " ".join(["python", "bench/int8_quality.py", *sys.argv[1:]]),
        "versions": {"nmt": nmt.__version__, "sacrebleu": sacrebleu.__version__},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "splits": splits,
    }
    path = record.write(result, args.output)
    print(f"record: {path}", file=sys.stderr)
    rows = [
        [
            s["split"],
            s["lines"],
            s["scores"]["none"]["bleu"],
            s["scores"]["int8"]["bleu"],
            s["bleu_loss"],
            s["scores"]["none"]["chrf"],
            s["scores"]["int8"]["chrf"],
            f"{100 * s['identical_lines']:.1f}%",
            f"{s['int8_speedup']:.2f}x",
        ]
        for s in splits
    ]
    print(f"\nfloat32 vs int8, beam {args.beam}, {args.threads} threads, {args.checkpoint}")
    headers = ["split", "lines", "BLEU fp32", "BLEU int8", "loss", "chrF fp32", "chrF int8"]
    print(record.table([*headers, "same lines", "int8 speed"], rows))


if __name__ == "__main__":
    main()
