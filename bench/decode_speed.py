"""Decoding speed: nmt vs Hugging Face MarianMTModel vs CTranslate2, on the CPU or a GPU.

    python bench/decode_speed.py            # base + small, beam 5 and greedy, batch 16 and 64
    python bench/decode_speed.py --quick    # smoke test: small model, 16 sentences, ~30 s
    python bench/decode_speed.py --device cuda --peers-python python3   # on a GPU machine

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

nmt runs twice, each as `nmt translate` runs on the CPU (`engine.inference_model`):
float32 with oneDNN-packed linears (nmt/decoding/packing.py), and int8 (`decode.quantize=int8`:
dynamic int8 linears with per-channel weight scales, nmt/decoding/quantize.py), to set against
CTranslate2's int8.

On a GPU (--device cuda) nmt decodes as `nmt translate --device cuda` does: bf16 weights
(decode.precision auto), float32 log-probs and scores. HF runs the same model with bf16
weights; CTranslate2 runs float16 and bfloat16. A GPU machine cannot build the peer venv (no
package registry): --peers-python names an interpreter that has transformers and
ctranslate2 (bench/README.md: how to carry ctranslate2's wheel there). Every timing waits for
the GPU to finish. A CTranslate2 compute type that cannot load (e.g. a wheel built for
another CUDA) is left out and the reason recorded under `skipped`.

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
from peers import PeerError, PeerWorker, add_peer_arguments, allocator_record, open_peer_for

import nmt
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.decoding.engine import inference_model
from nmt.decoding.search import SearchSettings, search
from nmt.memory import configure_cpu_memory
from nmt.model.transformer import Transformer
from nmt.runtime import choose_precision

CT2_TYPES = {"cpu": ("float32", "int8"), "cuda": ("float16", "bfloat16")}
HF_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # nmt's precision names -> torch's
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
    """Timed search over `batches` (already on the model's device). The search returns its
    hypotheses as host lists, so the clock counts the GPU's work too."""
    settings = forced_length(beam, length)
    model.eval()

    def run(limit: int = 0, count_steps: bool = False) -> dict:
        lengths, steps = [], []
        _sync(batches[0].device)
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_precision(device: torch.device) -> str:
    """What `nmt translate` decodes in on `device` by default (decode.precision auto)."""
    return choose_precision("auto", device, key="decode.precision")


def nmt_models(size: str, args, device: torch.device) -> tuple[dict[str, torch.nn.Module], int]:
    """nmt's models as `nmt translate` decodes on `device`, and their parameter count: on the
    CPU packed float32 and int8 (a copy); on a GPU the weights in decode.precision auto's
    choice (`gpu_precision`: bf16, or fp16 on a GPU without bf16)."""
    model = build_nmt(size, vocab_size=args.vocab, seed=args.seed).eval()
    parameters = model.num_parameters()  # packed linears hold their weights as buffers
    if device.type == "cpu":
        int8_model = inference_model(model, "int8", device=CPU)
        models = {"nmt": inference_model(model, "none", device=CPU), "nmt-int8": int8_model}
        return models, parameters
    model = inference_model(
        model.to(device), "none", device=device, precision=gpu_precision(device)
    )
    return {"nmt": model}, parameters


# --------------------------------------------------------------------------- peers


def peer_runners(
    peer: PeerWorker | None, *, beam: int, length: int, threads: int, compute_types: list[str]
) -> dict:
    """HF and each loadable CTranslate2 compute type, as runners like nmt's."""
    if peer is None:
        return {}
    runners = {
        "hf": lambda limit=0, count_steps=False: peer.call(
            "hf_decode", beam=beam, length=length, limit=limit, count_steps=count_steps
        )
    }
    for compute_type in compute_types:
        runners[f"ct2-{compute_type}"] = lambda limit=0, count_steps=False, t=compute_type: (
            peer.call(
                "ct2_decode", compute_type=t, beam=beam, length=length, threads=threads, limit=limit
            )
            | {"steps": None}
        )
    return runners


def prepare_peer(
    peer: PeerWorker, size: str, *, args, spm_path: Path, device: torch.device
) -> tuple[dict, list[str], dict[str, str]]:
    """Build HF's model of `size` on `device` (on a GPU with weights in nmt's precision there)
    and convert it for CTranslate2. Returns its info, the CTranslate2 compute types that
    loaded, and why each other one did not."""
    built = peer.call(
        "build",
        **SIZES[size],
        vocab_size=args.vocab,
        dropout=0.1,
        seed=args.seed,
        threads=args.threads,
        device=str(device),
        dtype="float32" if device.type == "cpu" else HF_DTYPES[gpu_precision(device)],
    )
    loaded, skipped = [], {}
    try:
        work_dir = corpus.CACHE / "ct2" / size
        peer.call("export_ct2", spm_model=str(spm_path), work_dir=str(work_dir))
    except PeerError as exc:  # e.g. no ctranslate2 in --peers-python
        print(f"CTranslate2 left out: {_last_line(exc)}", file=sys.stderr)
        return built, loaded, {t: _last_line(exc) for t in CT2_TYPES[device.type]}
    for compute_type in CT2_TYPES[device.type]:
        try:
            peer.call("ct2_load", compute_type=compute_type, threads=args.threads)
            loaded.append(compute_type)
        except PeerError as exc:
            skipped[compute_type] = _last_line(exc)
    for compute_type, why in skipped.items():
        print(f"ct2-{compute_type} left out: {why}", file=sys.stderr)
    return built, loaded, skipped


def _last_line(exc: Exception) -> str:
    """The exception line of a peer's traceback."""
    return str(exc).strip().splitlines()[-1]


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
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one) | cpu | cuda")
    add_peer_arguments(p, packages="transformers and ctranslate2")
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
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def run_cases(args, peer, sentences, spm_path, device) -> tuple[list[dict], dict, dict]:
    cases, params, skipped = [], {}, {}
    for size in args.sizes:
        models, parameters = nmt_models(size, args, device)
        params[size] = {"nmt": parameters}
        compute_types: list[str] = []
        if peer is not None:
            params[size]["hf"], compute_types, skipped[size] = prepare_peer(
                peer, size, args=args, spm_path=spm_path, device=device
            )
        for batch in args.batches:
            rows = corpus.chunks(corpus.with_eos(sentences), batch)
            if peer is not None:
                peer.call("set_inputs", batches=rows)
            tensors = [corpus.pad(r).to(device) for r in rows]
            for beam in args.beams:
                print(f"{size} beam {beam} batch {batch} ...", file=sys.stderr, flush=True)
                runners = {
                    name: nmt_runner(model, tensors, beam=beam, length=args.length)
                    for name, model in models.items()
                }
                runners |= peer_runners(
                    peer,
                    beam=beam,
                    length=args.length,
                    threads=args.threads,
                    compute_types=compute_types,
                )
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
    return cases, params, skipped


def precision_record(device: torch.device) -> dict[str, str]:
    if device.type == "cpu":
        return {"nmt": "fp32 (packed) and int8", "hf": "fp32", "ct2": "float32, int8"}
    weights = f"{gpu_precision(device)} weights"
    return {"nmt": weights, "hf": weights, "ct2": ", ".join(CT2_TYPES["cuda"])}


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
        f"\ndecoding on {args.device}, {n} sentences of {args.min_tokens}-{args.max_tokens} "
        f"pieces, output forced to {args.length} tokens, {args.threads} threads, medians of "
        f"{args.repeats}"
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
    device = torch.device(args.device)
    peer, peer_error = open_peer_for(args, device.type)
    try:
        versions = {"nmt": nmt.__version__} | (peer.call("versions") if peer else {})
        cases, params, skipped = run_cases(args, peer, sentences, spm_path, device)
    finally:
        if peer is not None:
            peer.__exit__(None, None, None)
    lengths = [len(s) + 1 for s in sentences]  # + EOS
    result = record.machine() | {
        "benchmark": "decode_speed",
        "command": " ".join(["python", "bench/decode_speed.py", *sys.argv[1:]]),
        "versions": versions,
        "device": str(device),
        "precision": precision_record(device),
        "peers_error": peer_error,
        "skipped": skipped,
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
