"""Quality and speed of a model's exports next to nmt's own decoding.

For one checkpoint (default: the multi30k_de_en run's best.pt) and one split (default
Multi30k test_2016_flickr), beam 5 and nmt's decode settings:
  * BLEU (sacreBLEU, with signatures) of nmt, the CTranslate2 export in float32 and int8,
    and the transformers export (generate(), sentences grouped by nmt's max length), and how
    many lines each shares with nmt's output;
  * the end-to-end time of `nmt translate` (a fresh process: start-up, SentencePiece,
    decoding, writing) with the checkpoint and with the CTranslate2 float32 directory, taken
    in turns A B A B A B, median of --repeats.
Writes bench/results/export_quality.json and prints a table.

    python bench/export_quality.py [--checkpoint PATH] [--limit N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import record
import sacrebleu
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nmt.data.tokenizer import EOS_ID  # noqa: E402
from nmt.decoding.engine import Engine  # noqa: E402
from nmt.decoding.options import DecodeOptions  # noqa: E402
from nmt.interop.ctranslate2 import CTranslate2Engine  # noqa: E402
from nmt.interop.export import export_command  # noqa: E402

DEFAULT_CHECKPOINT = Path("/work/model/runs/multi30k_de_en/checkpoints/best.pt")
THREADS = [1]  # set from --threads
DATA = Path(os.environ.get("NMT_SHARED_DATA", REPO.parent / "shared" / "data"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--split", default="test_2016_flickr")
    p.add_argument("--limit", type=int, default=0, help="First N sentences only (0: all).")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--time-lines", type=int, default=300, help="Lines per timed translate.")
    p.add_argument("--threads", type=int, default=1, help="Threads of every system.")
    p.add_argument("--output", type=Path, default=None)
    return p.parse_args(argv)


def bleu(hyps: list[str], refs: list[str]) -> dict:
    metric = sacrebleu.BLEU()
    score = metric.corpus_score(hyps, [refs])
    return {"bleu": round(score.score, 2), "signature": str(metric.get_signature())}


def hf_translate(hf_dir: Path, translator: Engine, lines: list[str]) -> list[str]:
    """generate() with beam 5, one call per group of sentences sharing nmt's max length."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(hf_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    ids = tokenizer(lines)["input_ids"]
    groups = defaultdict(list)
    for i, row in enumerate(ids):
        groups[translator.settings.max_len(len(row))].append(i)
    out: list[str] = [""] * len(lines)
    with torch.inference_mode():
        for max_len, indices in groups.items():
            for start in range(0, len(indices), 32):
                chunk = indices[start : start + 32]
                batch = tokenizer([lines[i] for i in chunk], return_tensors="pt", padding=True)
                generated = model.generate(**batch, num_beams=5, max_length=max_len + 1)
                for i, row in zip(chunk, generated[:, 1:].tolist()):
                    row = row[: row.index(EOS_ID)] if EOS_ID in row else row[: max_len - 1]
                    out[i] = tokenizer.decode(row, skip_special_tokens=True)
    return out


def timed_translate(model: Path, src: Path, out: Path) -> float:
    """Seconds of one `nmt translate` process, start-up included."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(THREADS[0])}
    started = record.now()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nmt.cli",
            "translate",
            str(model),
            "-i",
            str(src),
            "-o",
            str(out),
            "--device",
            "cpu",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    return record.now() - started


def main(argv=None) -> None:
    args = parse_args(argv)
    THREADS[0] = args.threads
    torch.set_num_threads(args.threads)
    base = DATA / "multi30k"
    src_lines = (base / f"{args.split}.de").read_text(encoding="utf-8").splitlines()
    refs = (base / f"{args.split}.en").read_text(encoding="utf-8").splitlines()
    if args.limit:
        src_lines, refs = src_lines[: args.limit], refs[: args.limit]
    work = Path(tempfile.mkdtemp(prefix="export_quality."))
    dirs = {"ct2_float32": work / "ct2", "ct2_int8": work / "ct2_int8", "hf": work / "hf"}
    export_command(
        args.checkpoint,
        to="ctranslate2",
        out=dirs["ct2_float32"],
    )
    export_command(
        args.checkpoint,
        to="ctranslate2",
        out=dirs["ct2_int8"],
        quantize="int8",
    )
    export_command(
        args.checkpoint,
        to="huggingface",
        out=dirs["hf"],
    )

    nmt = Engine.from_checkpoint(args.checkpoint, DecodeOptions(device="cpu", beam_size=5))
    outputs = {"nmt": nmt.translate(src_lines).best}
    for name in ("ct2_float32", "ct2_int8"):
        ct2 = CTranslate2Engine.from_directory(dirs[name], DecodeOptions(beam_size=5))
        outputs[name] = ct2.translate(src_lines).best
    outputs["transformers"] = hf_translate(dirs["hf"], nmt, src_lines)
    quality = {
        name: bleu(hyps, refs)
        | {"same_as_nmt": sum(a == b for a, b in zip(hyps, outputs["nmt"])) / len(hyps)}
        for name, hyps in outputs.items()
    }

    print({n: (q["bleu"], q["same_as_nmt"]) for n, q in quality.items()}, flush=True)
    src_file = work / "src.de"
    src_file.write_text("\n".join(src_lines[: args.time_lines]) + "\n", encoding="utf-8")
    times: dict[str, list[float]] = {"checkpoint": [], "ct2_float32": []}
    for _ in range(args.repeats):  # A B A B ...: both see the same load on the machine
        times["checkpoint"].append(timed_translate(args.checkpoint, src_file, work / "a.txt"))
        times["ct2_float32"].append(timed_translate(dirs["ct2_float32"], src_file, work / "b.txt"))
    speed = {name: record.summary(t) for name, t in times.items()}
    ratio = speed["checkpoint"]["median"] / speed["ct2_float32"]["median"]

    import ctranslate2
    import transformers

    result = {
        "machine": record.machine()
        | {
            "ctranslate2": ctranslate2.__version__,
            "transformers": transformers.__version__,
        },
        "checkpoint": str(args.checkpoint),
        "split": args.split,
        "sentences": len(src_lines),
        "beam_size": 5,
        "quality": quality,
        "threads": args.threads,
        "timed_lines": min(args.time_lines, len(src_lines)),
        "nmt_translate_seconds": speed,
        "speedup_ct2_over_checkpoint": round(ratio, 2),
        "note": "other engineers' jobs shared the 2 cores; the ratio is from runs in turns",
    }
    path = record.write(
        result, record.output_path("export_quality", output=args.output, quick=False)
    )
    rows = [[n, q["bleu"], q["same_as_nmt"]] for n, q in quality.items()]
    print(record.table(["system", "BLEU", "same as nmt"], rows))
    print(
        f"nmt translate: checkpoint {speed['checkpoint']['median']:.1f}s, "
        f"CTranslate2 {speed['ct2_float32']['median']:.1f}s (x{ratio:.2f}); {path}"
    )


if __name__ == "__main__":
    main()
