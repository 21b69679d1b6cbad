"""Decoding speed: nmt vs Hugging Face MarianMTModel vs CTranslate2 (float32 and int8) on CPU.

    python bench/decode_speed.py            # base + small, beam 5 and greedy, batch 16 and 64
    python bench/decode_speed.py --quick    # smoke test: small model, 16 sentences, ~30 s

Method (shared/design/BENCHMARKS.md): every system has the same sizes (`base`: d512, 8 heads,
6+6 layers, ffn 2048; `small`: d256, 4 heads, 3+3, ffn 1024; joint vocabulary 10k, shared and
tied embeddings, ReLU) and random weights. They read the same inputs: the first N sentences of
15-35 pieces of newstest2014.de, encoded with one SentencePiece model, cut into the same
batches in file order. Random weights produce no sensible EOS, so the output length is forced:
every system runs exactly L decoder steps per batch and emits L tokens per sentence (nmt: L-1
tokens then its forced EOS, i.e. min_len = L-1 and max_len = L; HF: min_new_tokens =
max_new_tokens = L; CTranslate2: min/max_decoding_length = L). A check pass on the first batch
(also the warm-up) counts the decoder calls of nmt and HF, and every run's output lengths are
checked. Systems then take turns (A B C D, A B C D, ...) for --repeats rounds; rates are
computed per run and summarised as median/min/max, with each system's median ratio to nmt's.

nmt runs twice, each as `nmt translate` runs on the CPU (`translator.inference_model`):
float32 with oneDNN-packed linears (nmt/decoding/packing.py), and int8 (`decode.quantize=int8`:
dynamic int8 linears with per-channel weight scales, nmt/decoding/quantize.py), to set against
CTranslate2's int8.

The peers run in their own venv (bench/.venvs/peers, see peers.py), one process kept alive
for the whole run; only one process computes at a time. Prints a table last and writes
bench/results/decode_speed.json.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import corpus
import record
import torch
from models import SIZES, build_nmt
from peers import PeerWorker, allocator_record, open_marian_peer

import nmt
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.decoding.search import SearchSettings, search
from nmt.decoding.translator import inference_model
from nmt.memory import configure_cpu_memory
from nmt.model.transformer import Transformer

CT2_TYPES = ("float32", "int8")
CPU = torch.device("cpu")
Run = Callable[..., dict]  # run(limit=0, count_steps=False) -> {"seconds", "lengths", "steps"}


# --------------------------------------------------------------------------- nmt


class _StepCounter:
    """The search protocol of `model`, counting decode_step calls (only in the check pass)."""

    def __init__(self, model: Transformer):
        self.model, self.steps = model, 0

    def encode(self, src_ids):
        return self.model.encode(src_ids)

    def init_cache(self, memory, *, max_len: int):
        return self.model.init_cache(memory, max_len=max_len)

    def decode_step(self, prev_tokens, memory, cache):
        self.steps += 1
        return self.model.decode_step(prev_tokens, memory, cache)


def forced_length(beam: int, length: int) -> SearchSettings:
    """Exactly `length` steps: EOS banned before step length-1 and forced at it."""
    return SearchSettings(
        beam_size=beam,
        n_best=1,
        length_penalty=1.0,
        max_len_a=0.0,
        max_len_b=length,
        min_len=length - 1,
    )


def nmt_runner(model: Transformer, batches: list[torch.Tensor], *, beam: int, length: int) -> Run:
    settings = forced_length(beam, length)
    model.eval()

    def run(limit: int = 0, count_steps: bool = False) -> dict:
        lengths, steps = [], []
        started = record.now()
        for src in batches[:limit] if limit else batches:
            searched = _StepCounter(model) if count_steps else model
            hyps = search(searched, src, settings, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID)
            lengths.extend(len(nbest[0].tokens) + 1 for nbest in hyps)  # + EOS
            steps.append(searched.steps if count_steps else None)
        return {
            "seconds": record.now() - started,
            "lengths": lengths,
            "steps": steps if count_steps else None,
        }

    return run


# --------------------------------------------------------------------------- peers


def peer_runners(peer: PeerWorker | None, *, beam: int, length: int, threads: int) -> dict:
    if peer is None:
        return {}
    runners = {
        "hf": lambda limit=0, count_steps=False: peer.call(
            "hf_decode", beam=beam, length=length, limit=limit, count_steps=count_steps
        )
    }
    for compute_type in CT2_TYPES:
        runners[f"ct2-{compute_type}"] = lambda limit=0, count_steps=False, t=compute_type: (
            peer.call(
                "ct2_decode", compute_type=t, beam=beam, length=length, threads=threads, limit=limit
            )
            | {"steps": None}
        )
    return runners


def prepare_peer(peer: PeerWorker, size: str, *, args, spm_path: Path) -> dict:
    built = peer.call(
        "build",
        **SIZES[size],
        vocab_size=args.vocab,
        dropout=0.1,
        seed=args.seed,
        threads=args.threads,
    )
    peer.call("export_ct2", spm_model=str(spm_path), work_dir=str(corpus.CACHE / "ct2" / size))
    return built


# --------------------------------------------------------------------------- measuring


def measure(runners: dict[str, Run], *, repeats: int, sentences: int, length: int) -> dict:
    """Check pass on one batch (warm-up, step counts), then `repeats` rounds in turn."""
    check = {name: run(limit=1, count_steps=True) for name, run in runners.items()}
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    lengths_ok = {name: True for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            out = run()
            seconds[name].append(out["seconds"])
            lengths_ok[name] &= set(out["lengths"]) == {length}
    nmt_median = record.summary(sentences / s for s in seconds["nmt"])["median"]
    systems = {}
    for name, times in seconds.items():
        per_sentence = record.rates(sentences, times)
        systems[name] = {
            "seconds": record.summary(times),
            "sentences_per_s": per_sentence,
            "tokens_per_s": record.rates(sentences * length, times),
            "vs_nmt": per_sentence["median"] / nmt_median,
            "decoder_steps_first_batch": (check[name]["steps"] or [None])[0],
            "output_lengths_all_forced": lengths_ok[name]
            and set(check[name]["lengths"]) == {length},
        }
    return systems


def steps_agree(systems: dict, length: int) -> bool:
    counted = [s["decoder_steps_first_batch"] for s in systems.values()]
    forced = all(s["output_lengths_all_forced"] for s in systems.values())
    return forced and all(c in (None, length) for c in counted)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["base", "small"])
    p.add_argument("--beams", nargs="+", type=int, default=[5, 1])
    p.add_argument("--batches", nargs="+", type=int, default=[16, 64])
    p.add_argument("--sentences", type=int, default=128)
    p.add_argument("--min-tokens", type=int, default=15)
    p.add_argument("--max-tokens", type=int, default=35)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--length", type=int, default=30, help="forced output tokens per sentence")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data-root", type=Path, default=corpus.DATA_ROOT)
    p.add_argument(
        "--src",
        type=Path,
        default=None,
        help="default: DATA_ROOT/wmt_newstest/de-en/newstest2014.de",
    )
    p.add_argument("--no-peers", action="store_true", help="nmt alone (no peer venv)")
    p.add_argument(
        "--peers-nmt-allocator",
        "--peers-huge-pages",  # its name before glibc's settings joined the huge pages
        dest="peers_nmt_allocator",
        action="store_true",
        help="control run: the peers also get the memory settings nmt's CLI makes "
        "(nmt/memory.py: glibc keeps freed memory)",
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke run (small model)")
    p.add_argument(
        "--output", type=Path, default=None, help="default: bench/results/decode_speed.json"
    )
    args = p.parse_args(argv)
    args.output = record.output_path("decode_speed", output=args.output, quick=args.quick)
    if args.quick:
        args.sizes, args.beams, args.batches = ["small"], [5, 1], [8]
        args.sentences, args.repeats, args.length = 16, 2, 8
    if args.length < 2:
        p.error("--length must be >= 2 (nmt's forced EOS takes the last step)")
    args.src = args.src or args.data_root / "wmt_newstest" / "de-en" / "newstest2014.de"
    return args


def run_cases(args, peer, sentences, spm_path) -> tuple[list[dict], dict]:
    cases, params = [], {}
    for size in args.sizes:
        model = build_nmt(size, vocab_size=args.vocab, seed=args.seed).eval()
        params[size] = {"nmt": model.num_parameters()}
        # As `nmt translate` decodes on the CPU: int8 (a copy), else packed float32 linears.
        int8_model = inference_model(model, "int8", device=CPU)
        model = inference_model(model, "none", device=CPU)
        if peer is not None:
            params[size]["hf"] = prepare_peer(peer, size, args=args, spm_path=spm_path)
        for batch in args.batches:
            rows = corpus.chunks(corpus.with_eos(sentences), batch)
            if peer is not None:
                peer.call("set_inputs", batches=rows)
            tensors = [corpus.pad(r) for r in rows]
            for beam in args.beams:
                print(f"{size} beam {beam} batch {batch} ...", file=sys.stderr, flush=True)
                runners = {
                    "nmt": nmt_runner(model, tensors, beam=beam, length=args.length),
                    "nmt-int8": nmt_runner(int8_model, tensors, beam=beam, length=args.length),
                }
                runners |= peer_runners(peer, beam=beam, length=args.length, threads=args.threads)
                systems = measure(
                    runners, repeats=args.repeats, sentences=len(sentences), length=args.length
                )
                cases.append(
                    {
                        "size": size,
                        "beam": beam,
                        "batch": batch,
                        "systems": systems,
                        "steps_agree": steps_agree(systems, args.length),
                    }
                )
    return cases, params


def print_table(cases: list[dict], args, n: int) -> None:
    rows = []
    for case in cases:
        for name, s in case["systems"].items():
            sps = s["sentences_per_s"]
            rows.append(
                [
                    case["size"],
                    case["beam"],
                    case["batch"],
                    name,
                    sps["median"],
                    f"{sps['min']:.2f}-{sps['max']:.2f}",
                    s["tokens_per_s"]["median"],
                    f"{s['vs_nmt']:.2f}x",
                    "ok" if case["steps_agree"] else "MISMATCH",
                ]
            )
    print(
        f"\ndecoding, {n} sentences of {args.min_tokens}-{args.max_tokens} pieces, output "
        f"forced to {args.length} tokens, {args.threads} threads, medians of {args.repeats}"
    )
    print(
        record.table(
            ["size", "beam", "batch", "system", "sent/s", "min-max", "tok/s", "vs nmt", "steps"],
            rows,
        )
    )


def main(argv: list[str] | None = None) -> None:
    # As nmt's command line does, before torch's first CPU allocation.
    memory = configure_cpu_memory()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    spm_path = corpus.sentencepiece_model(data_root=args.data_root, vocab_size=args.vocab)
    tokenizer = corpus.load_tokenizer(spm_path)
    sentences = corpus.sentences_by_length(
        tokenizer,
        args.src,
        count=args.sentences,
        min_tokens=args.min_tokens,
        max_tokens=args.max_tokens,
    )
    peer, peer_error = open_marian_peer(
        disabled=args.no_peers, allocator_as_nmt=args.peers_nmt_allocator
    )
    try:
        versions = {"nmt": nmt.__version__} | (peer.call("versions") if peer else {})
        cases, params = run_cases(args, peer, sentences, spm_path)
    finally:
        if peer is not None:
            peer.__exit__(None, None, None)
    lengths = [len(s) + 1 for s in sentences]  # + EOS
    result = record.machine() | {
        "benchmark": "decode_speed",
        "command": " ".join(["python", "bench/decode_speed.py", *sys.argv[1:]]),
        "versions": versions,
        "peers_error": peer_error,
        "allocator": allocator_record(memory, peers_as_nmt=args.peers_nmt_allocator),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "inputs": {
            "sentences": len(sentences),
            "source_tokens_with_eos": record.summary(lengths),
            "spm_model": spm_path.name,
        },
        "parameters": params,
        "cases": cases,
    }
    result["inputs"]["source_tokens_with_eos"].pop("runs")
    path = record.write(result, args.output)
    print(f"record: {path}", file=sys.stderr)
    print_table(cases, args, len(sentences))


if __name__ == "__main__":
    main()
