"""Scaling: `nmt prepare` and one training epoch as the corpus grows; decoding vs input length.

    python bench/scaling.py            # prepare + one epoch at 1x/4x/16x Multi30k, 5 buckets
    python bench/scaling.py --quick    # smoke test: 2000-line corpus, 1x/4x, ~1 min
    python bench/scaling.py --parts prepare --spm-sample 50000 --output \
        bench/results/scaling_prepare_sample50k.json    # prepare memory with a bounded sample
    python bench/scaling.py --parts prepare --pairs --factors 49176 1000000 5000000 \
        --spm-sample 100000 --output bench/results/scaling_prepare_5m.json   # 1M and 5M pairs

1. prepare: Multi30k train (de-en) repeated 1x, 4x, 16x is registered as a user corpus
   (`nmt download NAME --src --tgt`, plus Multi30k val as its dev split) in a temporary
   directory and prepared with `nmt prepare` (SentencePiece --vocab, dedup off so the copies
   stay). Each run is its own process; wall time is taken around it, and its peak RSS is its
   own VmHWM (see measured_run); the encoding processes' peak is recorded beside it.
   SentencePiece trains on a random sample of at most data.spm_sample sentences (default
   2M) and holds that sample in memory; with --spm-sample below the corpus size, the rest of
   prepare streams, so peak memory should stay flat as the corpus grows (but for dedup's
   set of pair hashes). With --pairs, the --factors are corpus sizes in pairs, built from
   Multi30k train + newstest 2012-2018 (49,176 pairs) repeated with the repetition number
   appended to both sides (write_numbered), prepared with dedup on; ratios are to the first.
2. one epoch: `nmt train` on the prepared 1x, 4x and 16x data, nmt's `tiny` model, CPU, no
   validation, `train.max_epochs=1`. The loop time of the epoch is taken from the trainer's
   metrics.jsonl: seconds per update from the `elapsed_s` of the first and last log records
   (so start-up and the first updates' warm-up are left out), times the epoch's batch count
   (from the trainer's start-up line). With --epoch-updates N the run stops after N updates
   and the epoch time is that extrapolation ("extrapolated": true); without it the whole epoch
   runs, and the process wall time (start-up, epoch, final checkpoint) is reported beside it.
3. decoding vs input length: newstest de sentences bucketed by length in pieces (benchmark
   SentencePiece model), --decode-sentences per bucket, nmt's random-weight model of
   --decode-size, beam 5, batch 16, output forced to the bucket's median source length.

Prints the tables last and writes bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import corpus
import record
import torch
from decode_speed import nmt_runner
from models import SIZES, build_nmt

import nmt
from nmt.data.clean import normalize
from nmt.data.text import iter_lines

DECODE_VOCAB = 10_000  # the benchmark SentencePiece model's, as in decode_speed.py
BUCKETS = ((1, 10), (11, 20), (21, 40), (41, 60), (61, 100))


# --------------------------------------------------------------------------- processes


def measured_run(command: list[str], *, log: Path) -> dict:
    """Run `command` (its output to `log`); wall seconds, its peak RSS in MiB, and the peak
    of the summed RSS of its child processes (prepare's encoding processes), sampled.

    The peak is the child's own VmHWM, which `nmt_command` makes it write at exit. Not
    ru_maxrss of os.wait4: Linux folds the RSS of the process that forked the child (this
    script, with torch loaded) into that figure at exec, which would hide the small peaks
    this benchmark is about (the same fold-in makes the children's ru_maxrss useless, hence
    the sampling, every CHILD_SAMPLE_S). Raises on a non-zero exit."""
    peak_file = log.with_name(log.name + ".peak")
    peak_file.unlink(missing_ok=True)
    env = {**os.environ, PEAK_FILE_ENV: str(peak_file)}
    with open(log, "w") as out:
        started = record.now()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        children_peak_kib = 0
        while process.poll() is None:
            children_peak_kib = max(children_peak_kib, _children_rss_kib(process.pid))
            time.sleep(CHILD_SAMPLE_S)
        seconds = record.now() - started
    if process.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{tail}")
    own = int(peak_file.read_text())
    return {
        "seconds": seconds,
        "peak_rss_mb": own / 1024,
        "children_peak_rss_mb": children_peak_kib / 1024,
    }


CHILD_SAMPLE_S = 0.2


def _children_rss_kib(pid: int) -> int:
    """The summed VmRSS (KiB) of the processes whose parent is `pid` (Linux /proc)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0
    total = 0
    for child in children:
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except OSError:
            continue  # it ended meanwhile
        found = re.search(r"VmRSS:\s+(\d+)", status)
        total += int(found.group(1)) if found else 0
    return total


PEAK_FILE_ENV = "NMT_BENCH_PEAK_FILE"
# `python -m nmt.cli ...`, plus an exit hook writing the process's VmHWM (KiB) to the file
# named by PEAK_FILE_ENV.
_CLI_WITH_PEAK = f"""
import atexit, os, re, runpy, sys
def _write_peak():
    if "{PEAK_FILE_ENV}" not in os.environ:
        return
    with open("/proc/self/status") as f:
        peak = re.search(r"VmHWM:\\s+(\\d+)", f.read()).group(1)
    with open(os.environ["{PEAK_FILE_ENV}"], "w") as f:
        f.write(peak)
atexit.register(_write_peak)
sys.argv[0] = "nmt"
runpy.run_module("nmt.cli", run_name="__main__")
"""


def nmt_command(*args: str) -> list[str]:
    return [sys.executable, "-c", _CLI_WITH_PEAK, *args]


# --------------------------------------------------------------------------- corpora


def write_repeated(src: Path, dst: Path, *, factor: int, lines: int) -> int:
    """`factor` copies of the first `lines` lines of `src` (all when 0) into `dst`."""
    text = list(iter_lines(src))
    text = text[:lines] if lines else text
    with open(dst, "w", encoding="utf-8") as f:
        for _ in range(factor):
            f.writelines(line + "\n" for line in text)
    return len(text) * factor


def write_numbered(bases: list[tuple[Path, Path]], raw: Path, *, pairs: int) -> int:
    """`pairs` pairs into raw/train.{de,en}: the base corpora's pairs, over and over; the
    pairs of the k-th repetition (k >= 1) end in " k" on both sides, so that dedup keeps
    them. Streams: the base is read again for each repetition."""
    written = 0
    with (
        open(raw / "train.de", "w", encoding="utf-8") as out_de,
        open(raw / "train.en", "w", encoding="utf-8") as out_en,
    ):
        for copy in itertools.count():
            suffix = f" {copy}" if copy else ""
            for de_file, en_file in bases:
                for de, en in zip(iter_lines(de_file), iter_lines(en_file)):
                    if written == pairs:
                        return written
                    out_de.write(f"{de}{suffix}\n")
                    out_en.write(f"{en}{suffix}\n")
                    written += 1
    return written  # pragma: no cover - the loop returns


def base_pairs(data_root: Path) -> list[tuple[Path, Path]]:
    """Multi30k train and newstest 2012-2018 (de, en): 49,176 pairs."""
    newstest = sorted((data_root / "wmt_newstest" / "de-en").glob("newstest*.de"))
    m30k = data_root / "multi30k" / "train.de"
    return [(de, de.with_suffix(".en")) for de in [m30k, *newstest]]


def register_corpus(work: Path, factor: int, args) -> dict:
    """data/<name>/{train,val}.{de,en} under `work`, via `nmt download --src --tgt`: with
    --pairs, `factor` pairs of Multi30k + newstest (write_numbered); else `factor` copies of
    Multi30k train."""
    name = f"pairs_{factor}" if args.pairs else f"m30k_x{factor}"
    raw = work / "raw" / name
    raw.mkdir(parents=True)
    m30k = args.data_root / "multi30k"
    if args.pairs:
        pairs = write_numbered(base_pairs(args.data_root), raw, pairs=factor)
    else:
        for lang in ("de", "en"):
            pairs = write_repeated(
                m30k / f"train.{lang}", raw / f"train.{lang}", factor=factor, lines=args.base_lines
            )
    for split, folder in (("train", raw), ("val", m30k)):
        subprocess.run(
            nmt_command(
                "download",
                name,
                "--src",
                str(folder / f"{split}.de"),
                "--tgt",
                str(folder / f"{split}.en"),
                "--src-lang",
                "de",
                "--tgt-lang",
                "en",
                "--split",
                split,
                "--data-dir",
                str(work / "data"),
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    for path in raw.iterdir():  # `nmt download` copied it
        path.unlink()
    config = {
        "name": name,
        "run_dir": str(work / "runs" / name),
        "data": {
            "corpus": name,
            "src_lang": "de",
            "tgt_lang": "en",
            "data_dir": str(work / "data"),
            "test_splits": [],
            "vocab_size": args.vocab,
            "dedup": bool(args.pairs),  # the copies of --factors are exact duplicates
            **({"spm_sample": args.spm_sample} if args.spm_sample else {}),
            **({"encode_workers": args.encode_workers} if args.encode_workers else {}),
        },
        "model": {"preset": "tiny"},
        "train": {
            "device": "cpu",
            "threads": args.threads,
            "max_tokens": args.max_tokens,
            "valid_bleu": False,
            "valid_every": 10**9,
            "save_every": 10**9,
            "log_every": args.log_every,
            "max_epochs": 1,
            "max_updates": 10**9,
        },
    }
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return {"name": name, "config": path, "pairs": pairs}


# --------------------------------------------------------------------------- 1. prepare


def measure_prepare(corpora: dict[int, dict], args, work: Path) -> list[dict]:
    rows = []
    for factor, c in corpora.items():
        print(f"prepare {c['name']} ...", file=sys.stderr, flush=True)
        runs = [
            measured_run(
                nmt_command("prepare", str(c["config"]), "--force"),
                log=work / f"prepare_{factor}.log",
            )
            for _ in range(args.repeats)
        ]
        rows.append(
            {
                "factor": factor,
                "pairs": c["pairs"],
                "seconds": record.summary([r["seconds"] for r in runs]),
                "peak_rss_mb": record.summary([r["peak_rss_mb"] for r in runs]),
                "children_peak_rss_mb": record.summary([r["children_peak_rss_mb"] for r in runs]),
            }
        )
    first = rows[0]
    for row in rows:  # against the smallest corpus, the "1x" run
        row["seconds_ratio"] = row["seconds"]["median"] / first["seconds"]["median"]
        row["peak_rss_ratio"] = row["peak_rss_mb"]["median"] / first["peak_rss_mb"]["median"]
    return rows


# --------------------------------------------------------------------------- 2. one epoch


def measure_epoch(c: dict, factor: int, args, work: Path) -> dict:
    print(f"one epoch {factor}x ...", file=sys.stderr, flush=True)
    overrides = [f"train.max_updates={args.epoch_updates}"] if args.epoch_updates else []
    log = work / f"train_{factor}.log"
    run = measured_run(nmt_command("train", str(c["config"]), "--no-evaluate", *overrides), log=log)
    found = re.search(r"in (\d+) batches", log.read_text())
    if not found:
        raise RuntimeError(f"no batch count in {log}")
    batches = int(found.group(1))
    metrics = work / "runs" / c["name"] / "metrics.jsonl"
    logged = [
        r for r in map(json.loads, metrics.read_text().splitlines()) if r.get("kind") == "train"
    ]
    if len(logged) < 2:
        raise RuntimeError(f"{metrics}: fewer than 2 training log records; lower --log-every")
    first, last = logged[0], logged[-1]
    per_update = (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])
    return {
        "factor": factor,
        "pairs": c["pairs"],
        "batches_per_epoch": batches,
        "updates_run": last["step"] if args.epoch_updates else batches,
        "seconds_per_update": per_update,
        "epoch_loop_s": per_update * batches,
        "extrapolated": bool(args.epoch_updates) and args.epoch_updates < batches,
        "process_s": run["seconds"],
        "peak_rss_mb": run["peak_rss_mb"],
        "tgt_tokens_per_s": statistics.median(r["tgt_tokens_per_s"] for r in logged[1:]),
    }


# --------------------------------------------------------------------------- 3. decoding


def length_buckets(args) -> list[dict]:
    """Per bucket: the first --decode-sentences newstest de lines of that length (pieces)."""
    spm_path = corpus.sentencepiece_model(data_root=args.data_root, vocab_size=DECODE_VOCAB)
    tokenizer = corpus.load_tokenizer(spm_path)
    files = sorted((args.data_root / "wmt_newstest" / "de-en").glob("newstest*.de"))
    wanted = {b: [] for b in args.buckets}
    for path in files:
        for line in iter_lines(path):
            ids = tokenizer.encode_src([normalize(line)])[0]
            for lo, hi in args.buckets:
                if lo <= len(ids) <= hi and len(wanted[(lo, hi)]) < args.decode_sentences:
                    wanted[(lo, hi)].append(ids)
    return [{"bucket": b, "sentences": s} for b, s in wanted.items() if s]


def measure_decoding(args) -> list[dict]:
    model = build_nmt(args.decode_size, vocab_size=DECODE_VOCAB, seed=1).eval()
    rows = []
    for b in length_buckets(args):
        print(f"decode {b['bucket']} ...", file=sys.stderr, flush=True)
        sents = b["sentences"]
        length = max(2, round(statistics.median(len(s) for s in sents)))
        batches = [corpus.pad(r) for r in corpus.chunks(corpus.with_eos(sents), 16)]
        run = nmt_runner(model, batches, beam=5, length=length)
        run(limit=1)  # warm-up
        times = [run()["seconds"] for _ in range(args.repeats)]
        rows.append(
            {
                "bucket": list(b["bucket"]),
                "sentences": len(sents),
                "mean_source_tokens": statistics.mean(len(s) for s in sents),
                "forced_output_tokens": length,
                "seconds": record.summary(times),
                "sentences_per_s": record.rates(len(sents), times),
                "tokens_per_s": record.rates(len(sents) * length, times),
                "ms_per_sentence": record.summary([1000 * t / len(sents) for t in times]),
            }
        )
    return rows


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--factors",
        nargs="+",
        type=int,
        default=[1, 4, 16],
        help="corpus sizes for prepare, in copies of Multi30k train",
    )
    p.add_argument(
        "--pairs",
        action="store_true",
        help="--factors are sizes in pairs of Multi30k + newstest (numbered copies, dedup on)",
    )
    p.add_argument("--epoch-factors", nargs="+", type=int, default=[1, 4, 16])
    p.add_argument(
        "--epoch-updates",
        type=int,
        default=0,
        help="stop each epoch run after N updates and extrapolate (0: full epoch)",
    )
    p.add_argument("--base-lines", type=int, default=0, help="lines of Multi30k per copy (0: all)")
    p.add_argument("--vocab", type=int, default=8000, help="prepare's SentencePiece vocabulary")
    p.add_argument(
        "--spm-sample",
        type=int,
        default=0,
        help="data.spm_sample for prepare (0: nmt's default, 2M sentences)",
    )
    p.add_argument(
        "--encode-workers", type=int, default=0, help="data.encode_workers (0: nmt's default)"
    )
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--decode-size", choices=sorted(SIZES), default="base")
    p.add_argument("--decode-sentences", type=int, default=32, help="per length bucket")
    p.add_argument("--repeats", type=int, default=1, help="prepare runs / decoding passes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--parts",
        nargs="+",
        default=["prepare", "epoch", "decode"],
        choices=["prepare", "epoch", "decode"],
        help="what to measure (an epoch needs its corpus prepared, which is measured too)",
    )
    p.add_argument("--data-root", type=Path, default=corpus.DATA_ROOT)
    p.add_argument("--work-dir", type=Path, default=None, help="default: a temporary directory")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--output", type=Path, default=None, help="default: bench/results/scaling.json")
    args = p.parse_args(argv)
    args.output = record.output_path("scaling", output=args.output, quick=args.quick)
    args.buckets = BUCKETS
    if args.quick:
        args.factors, args.epoch_factors, args.epoch_updates = [1, 4], [1], 6
        args.base_lines, args.vocab, args.log_every = 2000, 1000, 2
        args.decode_size, args.decode_sentences, args.buckets = "small", 8, BUCKETS[:2]
    if "prepare" not in args.parts:
        args.factors = args.epoch_factors if "epoch" in args.parts else []
    elif "epoch" in args.parts and not set(args.epoch_factors) <= set(args.factors):
        p.error("--epoch-factors must be among --factors (an epoch trains on prepared data)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"prepare": [], "epoch": [], "decode": []}
    with tempfile.TemporaryDirectory(prefix="nmt-scaling-", dir=args.work_dir) as tmp:
        work = Path(tmp)
        corpora = {f: register_corpus(work, f, args) for f in args.factors}
        result["prepare"] = measure_prepare(corpora, args, work)
        if "epoch" in args.parts:
            result["epoch"] = [measure_epoch(corpora[f], f, args, work) for f in args.epoch_factors]
    if "decode" in args.parts:
        result["decode"] = measure_decoding(args)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    out = record.machine() | {
        "benchmark": "scaling",
        "command": " ".join(["python", "bench/scaling.py", *sys.argv[1:]]),
        "versions": {"nmt": nmt.__version__},
        "settings": settings | {"buckets": [list(b) for b in args.buckets]},
        "results": result,
    }
    print(f"record: {record.write(out, args.output)}", file=sys.stderr)
    print_tables(result, args)


def print_tables(result: dict, args) -> None:
    if result["prepare"]:
        sample = f"sample {args.spm_sample} sentences" if args.spm_sample else "default sample"
        dedup = "dedup on" if args.pairs else "dedup off"
        print(
            f"\nnmt prepare (SentencePiece {args.vocab}, {sample}, {dedup}), "
            f"median of {args.repeats}"
        )
        print(
            record.table(
                ["corpus", "pairs", "seconds", "x 1st", "peak RSS MB", "x 1st", "encoders MB"],
                [
                    [
                        f"{r['pairs']}" if args.pairs else f"{r['factor']}x",
                        r["pairs"],
                        r["seconds"]["median"],
                        r["seconds_ratio"],
                        r["peak_rss_mb"]["median"],
                        r["peak_rss_ratio"],
                        r["children_peak_rss_mb"]["median"],
                    ]
                    for r in result["prepare"]
                ],
            )
        )
    if result["epoch"]:
        print(
            f"\none training epoch, tiny model, CPU {args.threads} threads, "
            f"<= {args.max_tokens} tokens a batch"
        )
        print(
            record.table(
                [
                    "corpus",
                    "batches",
                    "s/update",
                    "epoch s",
                    "measured",
                    "process s",
                    "peak RSS MB",
                ],
                [
                    [
                        f"{r['factor']}x",
                        r["batches_per_epoch"],
                        r["seconds_per_update"],
                        r["epoch_loop_s"],
                        "extrapolated" if r["extrapolated"] else "full",
                        r["process_s"],
                        r["peak_rss_mb"],
                    ]
                    for r in result["epoch"]
                ],
            )
        )
    if result["decode"]:
        print(
            f"\ndecoding vs source length, {args.decode_size} model (random weights), beam 5, "
            f"batch 16, output forced to the bucket's median length, median of {args.repeats}"
        )
        print(
            record.table(
                ["pieces", "sentences", "out tokens", "sent/s", "tok/s", "ms/sent"],
                [
                    [
                        f"{r['bucket'][0]}-{r['bucket'][1]}",
                        r["sentences"],
                        r["forced_output_tokens"],
                        r["sentences_per_s"]["median"],
                        r["tokens_per_s"]["median"],
                        r["ms_per_sentence"]["median"],
                    ]
                    for r in result["decode"]
                ],
            )
        )


if __name__ == "__main__":
    main()
