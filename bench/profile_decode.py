"""Where nmt's decoding time goes: torch.profiler's operator table for one forced-length run.

    python bench/profile_decode.py                       # base, beam 5, batch 16, float32
    python bench/profile_decode.py --int8 --size small

Same inputs and forced output length as decode_speed.py (random weights, the first N
newstest2014 sentences of 15-35 pieces, L = 30 steps). One untimed pass warms up, then one
pass runs under the profiler. Prints the operators by self CPU time, and the share of the
matrix products (aten::mm / addmm, and quantized::linear_dynamic under --int8) in the total,
which bounds what any change outside them can gain.

    python bench/profile_decode.py --floor --size small

--floor times the same search (no profiler) with the real model and with a model of the same
depth, heads and vocabulary but d_model 16 and ffn 32, whose matrix products cost next to
nothing: what that one takes per step is the floor set by everything else (Python, operator
dispatch, the per-call cost of the kernels, the search's own work over the vocabulary), which
a faster product cannot remove. Medians of 5 runs each, taking turns.
"""

from __future__ import annotations

import argparse
import statistics
import time

import corpus
import torch
from decode_speed import forced_length
from models import SIZES, build_nmt
from torch.profiler import profile

from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.decoding.engine import inference_model
from nmt.decoding.search import search
from nmt.memory import configure_cpu_memory

MATMULS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "mkldnn::_linear_pointwise",
    "quantized::linear_dynamic",
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="base")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--sentences", type=int, default=32)
    p.add_argument("--length", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--int8", action="store_true")
    p.add_argument("--rows", type=int, default=15)
    p.add_argument("--floor", action="store_true", help="per-step time: real vs d16 model")
    args = p.parse_args()
    configure_cpu_memory()  # as nmt's command line does, before torch's first CPU allocation
    torch.set_num_threads(args.threads)
    tokenizer = corpus.load_tokenizer(corpus.sentencepiece_model(vocab_size=10_000))
    src = corpus.DATA_ROOT / "wmt_newstest" / "de-en" / "newstest2014.de"
    sentences = corpus.sentences_by_length(
        tokenizer, src, count=args.sentences, min_tokens=15, max_tokens=35
    )
    batches = [corpus.pad(r) for r in corpus.chunks(corpus.with_eos(sentences), args.batch)]
    quantize = "int8" if args.int8 else "none"
    model = build_nmt(args.size, vocab_size=10_000, seed=1).eval()
    # What `nmt translate` decodes with on the CPU (packed float32 linears, or int8).
    model = inference_model(model, quantize, device=torch.device("cpu"))
    settings = forced_length(args.beam, args.length)
    if args.floor:
        print_floor(args, {"real": model, "d16": floor_model(args.size, quantize)}, batches)
        return

    def decode() -> None:
        for batch in batches:
            search(model, batch, settings, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID)

    decode()
    with profile() as prof:
        decode()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMULS)
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    kind = "int8" if args.int8 else "float32"
    print(
        f"{args.size} {kind}, beam {args.beam}, batch {args.batch}, {args.threads} threads: "
        f"matrix products {100 * matmul / total:.1f}% of {total / 1e6:.2f} s self CPU time"
    )


def floor_model(size: str, quantize: str) -> torch.nn.Module:
    """`size`'s depth, heads and vocabulary with d_model 16 and ffn 32, as decoded."""
    model = build_nmt(size, vocab_size=10_000, seed=1, d_model=16, ffn_dim=32).eval()
    return inference_model(model, quantize, device=torch.device("cpu"))


def print_floor(args, models: dict[str, torch.nn.Module], batches: list[torch.Tensor]) -> None:
    """Milliseconds per decoding step of each model (the encoder included), taking turns."""
    settings = forced_length(args.beam, args.length)
    times: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(6):  # the first round warms up
        for name, model in models.items():
            started = time.perf_counter()
            for batch in batches:
                search(model, batch, settings, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID)
            if repeat:
                times[name].append(time.perf_counter() - started)
    steps = len(batches) * args.length
    per_step = {name: 1e3 * statistics.median(t) / steps for name, t in times.items()}
    kind = "int8" if args.int8 else "float32"
    print(
        f"{args.size} {kind}, beam {args.beam}, batch {args.batch}, {args.threads} threads: "
        f"{per_step['real']:.2f} ms per step; the d16 model {per_step['d16']:.2f} ms "
        f"({100 * per_step['d16'] / per_step['real']:.0f}%)"
    )


if __name__ == "__main__":
    main()
