"""Training throughput: nmt vs Hugging Face MarianMTModel, same sizes, same batches.

    python bench/train_speed.py             # base + small, 4096-token batches, 8 updates x 3
    python bench/train_speed.py --quick     # smoke test: small model, 1024-token batches
    python bench/train_speed.py --compile   # adds nmt under torch.compile (GPU: always on)
    python bench/train_speed.py --device cuda --max-tokens 16384 --peers-python python3  # GPU

An update is what nmt's trainer does, by the trainer's own code (nmt.training.step): forward,
loss, backward, gradient clipping (norm 1.0), an AdamW step and a (constant) scheduler step.
nmt's loss is its label-smoothed cross entropy (eps 0.1); Marian's is its own loss from
`labels` (plain cross entropy, the same cost to within one mean over V).

Equal token budget: Multi30k train (de->en) is encoded with the benchmark SentencePiece model
(joint 10k) and grouped by nmt's `make_batches` at --max-tokens; the first warm-up + timed
batches of epoch 0's shuffled order are collated once and both systems train on exactly these
tensors (Marian reads nmt's PAD as its own PAD id and ignores it in the loss). Systems take
turns (A B A B) for --repeats rounds of --updates updates; rates are per round, summarised
as median/min/max, with each system's median ratio to nmt's. Also reported: the padding
fraction of all epoch-0 batches, peak memory (GPU: each system's peak allocation, the other
trainers held in the same process left out; CPU: each process's peak RSS, which covers
everything the process held) and, on a GPU, model FLOPs
utilisation MFU = training FLOPs/s / peak, with training FLOPs from models.training_flops.

nmt's AdamW is fused (one kernel over all parameters) on the CPU and the GPU, as in its
trainer. On a GPU nmt trains under bf16 autocast (fp32 weights) as its trainer does, and so
does HF (fused AdamW there too). A GPU machine cannot build the peer venv (no package
registry): --peers-python names an interpreter that has transformers; without it a GPU run
is nmt alone. Prints a table last and writes bench/results/train_speed.json.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import corpus
import numpy as np
import record
import torch
from models import SIZES, build_nmt, matmul_parameters, training_flops
from peers import PeerWorker, add_peer_arguments, allocator_record, open_peer_for

import nmt
from nmt.data.batching import Batch, batches_for_epoch, collate, make_batches
from nmt.memory import configure_cpu_memory
from nmt.training.step import StepParts, training_step

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM


# --------------------------------------------------------------------------- data


def epoch_batches(args) -> tuple[list[Batch], dict]:
    """The timed batches (warm-up first) and padding statistics of the whole epoch."""
    spm_path = corpus.sentencepiece_model(data_root=args.data_root, vocab_size=args.vocab)
    tokenizer = corpus.load_tokenizer(spm_path)
    m30k = args.data_root / "multi30k"
    src, tgt = corpus.parallel_ids(tokenizer, m30k / "train.de", m30k / "train.en")
    keep = [i for i in range(len(src)) if max(len(src[i]), len(tgt[i])) < args.max_tokens]
    src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
    groups = make_batches(
        np.array([len(s) for s in src]),
        np.array([len(t) for t in tgt]),
        max_tokens=args.max_tokens,
    )
    order = batches_for_epoch(groups, seed=args.seed, epoch=0)
    every = [collate(src, tgt, idx) for idx in order]
    needed = args.warmup + args.updates
    if len(every) < needed:
        raise SystemExit(
            f"only {len(every)} batches at --max-tokens {args.max_tokens}, {needed} needed"
        )
    chosen = every[:needed]
    stats = {
        "pairs": len(src),
        "batches_per_epoch": len(every),
        "epoch_padding_fraction": _padding(every),
        "timed_padding_fraction": _padding(chosen[args.warmup :]),
        "timed_tgt_tokens": sum(b.num_tgt_tokens for b in chosen[args.warmup :]),
        "timed_src_tokens": sum(b.num_src_tokens for b in chosen[args.warmup :]),
        "spm_model": spm_path.name,
    }
    return chosen, stats


def _padding(batches: list[Batch]) -> float:
    slots = sum(b.src_slots + b.tgt_slots for b in batches)
    real = sum(b.num_src_tokens + b.num_tgt_tokens for b in batches)
    return 1.0 - real / slots


# --------------------------------------------------------------------------- nmt


class NmtTrainer:
    """nmt's update, the Trainer's own `training_step`, over a fixed list of batches."""

    def __init__(
        self, model, batches: list[Batch], *, device: torch.device, lr: float, compile_model: bool
    ):
        self.model = model.to(device).train()
        self.step_model = torch.compile(self.model) if compile_model else self.model
        self.device = device
        self.batches = [b.to(device) for b in batches]
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=lr,
            betas=(0.9, 0.98),
            eps=1e-9,
            weight_decay=0.0,
            fused=device.type in ("cuda", "cpu"),  # as nmt's trainer
        )
        # The trainer's own update (nmt.training.step), with a constant learning rate.
        self.parts = StepParts(
            model=self.model,
            run_model=self.step_model,
            optimizer=self.optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0),
            scaler=torch.amp.GradScaler(device.type, enabled=False),
            autocast=lambda: torch.autocast(
                device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"
            ),
            label_smoothing=0.1,
            clip_norm=1.0,
        )

    def update(self, batch: Batch) -> None:
        training_step(self.parts, [batch], total_tokens=batch.num_tgt_tokens)

    def run(self, first: int, count: int) -> dict:
        others = 0
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            # The GPU also holds the other trainers of this process (nmt eager and
            # compiled): their share is left out, so the peak is this system's alone, as
            # HF's is in its own process.
            others = torch.cuda.memory_allocated() - self._resident_bytes()
        started = record.now()
        for batch in self.batches[first : first + count]:
            self.update(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return {"seconds": record.now() - started, "peak_mb": _peak_mb(self.device, others)}

    def _resident_bytes(self) -> int:
        """What this trainer keeps on its device between updates: weights, gradients, the
        optimizer's state and the batches."""
        params = list(self.model.parameters())
        tensors = params + [p.grad for p in params if p.grad is not None]
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if torch.is_tensor(v)]
        tensors += [t for b in self.batches for t in (b.src_ids, b.tgt_in, b.tgt_out)]
        on_device = (t for t in tensors if t.device.type == self.device.type)
        return sum(t.numel() * t.element_size() for t in on_device)


def _peak_mb(device: torch.device, others: int = 0) -> float:
    """GPU: the allocator's peak less `others` bytes held for other systems; CPU: the
    process's peak RSS (everything it held)."""
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated() - others) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- one size


def systems_for(
    size: str, batches: list[Batch], args, peer: PeerWorker | None, device: torch.device
) -> tuple[dict, dict]:
    """name -> run(first, count) -> {"seconds", "peak_mb"}, and the parameter counts."""
    model = build_nmt(size, vocab_size=args.vocab, seed=args.seed)
    info = {"nmt_parameters": model.num_parameters(), "matmul": matmul_parameters(model)}
    trainers = {"nmt": NmtTrainer(model, batches, device=device, lr=args.lr, compile_model=False)}
    if args.compile or device.type == "cuda":
        twin = build_nmt(size, vocab_size=args.vocab, seed=args.seed)
        trainers["nmt-compile"] = NmtTrainer(
            twin, batches, device=device, lr=args.lr, compile_model=True
        )
    systems = {name: t.run for name, t in trainers.items()}
    if peer is not None:
        built = peer.call(
            "build",
            **SIZES[size],
            vocab_size=args.vocab,
            dropout=0.1,
            seed=args.seed,
            threads=args.threads,
            device=str(device),
        )
        info["hf_parameters"] = built["parameters"]
        peer.call(
            "train_setup",
            lr=args.lr,
            autocast="bfloat16" if device.type == "cuda" else None,
            batches=[
                {
                    "src": b.src_ids.tolist(),
                    "tgt_in": b.tgt_in.tolist(),
                    "tgt_out": b.tgt_out.tolist(),
                }
                for b in batches
            ],
        )
        systems["hf"] = lambda first, count: _hf_run(peer, first, count)
    return systems, info


def _hf_run(peer: PeerWorker, first: int, count: int) -> dict:
    out = peer.call("hf_train", first=first, count=count, clip_norm=1.0)
    peak = out["peak_cuda_mb"] if out.get("peak_cuda_mb") is not None else out["peak_rss_mb"]
    return {"seconds": out["seconds"], "peak_mb": peak}


def measure(systems: dict, args, stats: dict, info: dict, device: torch.device) -> dict:
    """Warm-up updates, then rounds in turn; rates per round.

    A compiled model warms up on every batch once, so that no (re)compilation for a new
    batch shape falls in a timed round.
    """
    for name, run in systems.items():
        run(0, args.warmup + args.updates if "compile" in name else args.warmup)
    seconds = {name: [] for name in systems}
    peaks = {name: 0.0 for name in systems}
    for _ in range(args.repeats):
        for name, run in systems.items():
            out = run(args.warmup, args.updates)
            seconds[name].append(out["seconds"])
            peaks[name] = max(peaks[name], out["peak_mb"])
    tgt, src = stats["timed_tgt_tokens"], stats["timed_src_tokens"]
    flops = training_flops(info["matmul"], src_tokens=src, tgt_tokens=tgt)
    nmt_median = record.rates(tgt, seconds["nmt"])["median"]
    result = {}
    for name, times in seconds.items():
        tgt_rate = record.rates(tgt, times)
        result[name] = {
            "seconds": record.summary(times),
            "tgt_tokens_per_s": tgt_rate,
            "src_tgt_tokens_per_s": record.rates(src + tgt, times),
            "vs_nmt": tgt_rate["median"] / nmt_median,
            "peak_memory_mb": peaks[name],
            "peak_memory_kind": "cuda max_memory_allocated"
            if device.type == "cuda"
            else "process peak RSS",
        }
        if device.type == "cuda":
            result[name]["mfu"] = record.summary([flops / s / args.peak_flops for s in times])
    return result


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["base", "small"])
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--updates", type=int, default=8, help="timed updates per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--vocab", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--compile", action="store_true", help="also nmt under torch.compile")
    p.add_argument(
        "--peak-flops",
        type=float,
        default=H100_BF16_PEAK,
        help="the GPU's peak FLOP/s for MFU (default: H100 SXM bf16 dense)",
    )
    p.add_argument("--data-root", type=Path, default=corpus.DATA_ROOT)
    add_peer_arguments(p, packages="transformers")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (small model)")
    p.add_argument(
        "--output", type=Path, default=None, help="default: bench/results/train_speed.json"
    )
    args = p.parse_args(argv)
    args.output = record.output_path("train_speed", output=args.output, quick=args.quick)
    if args.quick:
        args.sizes, args.max_tokens = ["small"], 1024
        args.updates, args.warmup, args.repeats = 3, 1, 2
    return args


def main(argv: list[str] | None = None) -> None:
    # As nmt's command line does, before torch's first CPU allocation.
    memory = configure_cpu_memory()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    batches, stats = epoch_batches(args)
    # The peers' venv comes from the package registry, which a GPU machine may not reach:
    # there they run only in --peers-python.
    peer, peer_error = open_peer_for(args, device.type)
    results, infos = {}, {}
    try:
        versions = {"nmt": nmt.__version__} | (peer.call("versions") if peer else {})
        # Smallest first: on a CPU the peak RSS of each process then belongs to the size
        # being measured, not to a larger model measured before it.
        for size in sorted(args.sizes, key=lambda s: SIZES[s]["d_model"]):
            print(f"{size} ...", file=sys.stderr, flush=True)
            systems, infos[size] = systems_for(size, batches, args, peer, device)
            results[size] = measure(systems, args, stats, infos[size], device)
    finally:
        if peer is not None:
            peer.__exit__(None, None, None)
    out = record.machine() | {
        "benchmark": "train_speed",
        "command": " ".join(["python", "bench/train_speed.py", *sys.argv[1:]]),
        "device": str(device),
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "versions": versions,
        "peers_error": peer_error,
        "allocator": allocator_record(memory, peers_as_nmt=args.peers_nmt_allocator),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "data": stats,
        "models": infos,
        "results": results,
    }
    print(f"record: {record.write(out, args.output)}", file=sys.stderr)
    print_table(results, stats, args, device)


def print_table(results: dict, stats: dict, args, device: torch.device) -> None:
    rows = []
    for size, systems in results.items():
        for name, r in systems.items():
            t = r["tgt_tokens_per_s"]
            mfu = r.get("mfu")
            rows.append(
                [
                    size,
                    name,
                    t["median"],
                    f"{t['min']:.0f}-{t['max']:.0f}",
                    r["src_tgt_tokens_per_s"]["median"],
                    f"{r['vs_nmt']:.2f}x",
                    r["peak_memory_mb"],
                    f"{mfu['median']:.1%}" if mfu else "-",
                ]
            )
    print(
        f"\ntraining updates on {device}, Multi30k de-en, batches of <= {args.max_tokens} "
        f"tokens, {args.updates} updates x {args.repeats} rounds ({stats['timed_tgt_tokens']} "
        f"tgt tokens a round), {args.threads} threads, medians; epoch padding "
        f"{stats['epoch_padding_fraction']:.1%}"
    )
    print(
        record.table(
            ["size", "system", "tgt tok/s", "min-max", "src+tgt tok/s", "vs nmt", "peak MB", "MFU"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
