"""Where nmt's training time goes: torch.profiler's operator table for a few updates.

    python bench/profile_train.py                  # base, 4096-token Multi30k batches
    python bench/profile_train.py --size small

The update and the batches are train_speed.py's (forward, label-smoothed loss, backward,
clipping, fused AdamW; epoch 0's first batches of Multi30k de-en at --max-tokens). --warmup
updates run first, then --updates under the profiler. Prints the operators by self CPU time,
then the shares of the matrix products (aten::mm / addmm / bmm) and of attention (SDPA's
kernels) in the total, the products' own rate in GFLOP/s (the profiler's FLOP count of each
product over its time), and the ceiling that the products set: the speed-up if everything
else took no time at all.
"""

from __future__ import annotations

import argparse

import torch
from models import SIZES, build_nmt
from torch.profiler import profile
from train_speed import NmtTrainer, epoch_batches
from train_speed import parse_args as train_speed_args

from nmt.memory import configure_cpu_memory, enable_huge_pages

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")
ATTENTION_PREFIX = "aten::_scaled_dot_product"


def parse_args() -> argparse.Namespace:
    """This script's options, completed with train_speed.py's defaults for the rest (seed,
    vocabulary, data root), so that both scripts build the same batches and model."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="base")
    p.add_argument("--updates", type=int, default=3, help="profiled updates")
    p.add_argument("--warmup", type=int, default=4, help="updates before profiling")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=20)
    own = p.parse_args()
    shared = train_speed_args(
        ["--max-tokens", str(own.max_tokens), "--threads", str(own.threads)]
        + ["--warmup", str(own.warmup), "--updates", str(own.updates)]
    )
    return argparse.Namespace(**{**vars(shared), **vars(own)})


def main() -> None:
    # As nmt's command line does, before torch's first CPU allocation, plus huge pages: the
    # profiler's own records interleave with the model's tensors on the heap, so under it the
    # heap keeps growing, and huge pages keep that growth's page faults few (without them the
    # element-wise operators, the first to touch the new pages, time twice as long as they do
    # without the profiler).
    enable_huge_pages()
    configure_cpu_memory()
    args = parse_args()
    torch.set_num_threads(args.threads)
    batches, stats = epoch_batches(args)
    model = build_nmt(args.size, vocab_size=args.vocab, seed=args.seed)
    trainer = NmtTrainer(model, batches, device=torch.device("cpu"), lr=5e-4, compile_model=False)
    trainer.run(0, args.warmup)
    with profile(with_flops=True) as prof:
        seconds = trainer.run(args.warmup, args.updates)["seconds"]
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    total = sum(e.self_cpu_time_total for e in events)  # microseconds
    products = [e for e in events if e.key in MATMULS]
    product_time = sum(e.self_cpu_time_total for e in products)
    product_flops = sum(e.flops for e in products)
    attention = sum(e.self_cpu_time_total for e in events if e.key.startswith(ATTENTION_PREFIX))
    print(
        f"{args.size}, {args.updates} updates of <= {args.max_tokens} tokens "
        f"({stats['timed_tgt_tokens']} target tokens), {args.threads} threads, "
        f"{seconds:.2f} s under the profiler:\n"
        f"  matrix products {100 * product_time / total:.1f}% of {total / 1e6:.2f} s self CPU "
        f"time, at {product_flops / product_time / 1e3:.0f} GFLOP/s\n"
        f"  attention (SDPA) {100 * attention / total:.1f}%, everything else "
        f"{100 * (total - product_time - attention) / total:.1f}%\n"
        f"  ceiling: {total / product_time:.2f}x if everything but the products took no time"
    )


if __name__ == "__main__":
    main()
