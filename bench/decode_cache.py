"""Decoding speed with and without the key/value cache (same checkpoint, same inputs).

    python bench/decode_cache.py CHECKPOINT --src ../shared/data/multi30k/test_2016_flickr.de \
        --sentences 128 --batch 16 --beam 5 --repeats 3

"No cache" recomputes the whole target prefix through the teacher-forcing `forward` at every
step (what a decoder without incremental state must do); "cache" is nmt's `decode_step`.
Both run the same beam search, so the outputs must be identical; the script checks it.
Runs alternate (cache, no cache, cache, ...) and medians are reported. Prints a table last
and writes a JSON record under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from nmt.data.clean import normalize
from nmt.data.text import read_lines
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.decoding.engine import Engine
from nmt.decoding.search import SearchSettings, search
from nmt.model.attention import attention_mask


class _PrefixCache:
    """Holds the generated prefix per row; `reorder` selects rows like DecoderCache."""

    def __init__(self, rows: int, device: torch.device):
        self.prefix = torch.full((rows, 1), BOS_ID, dtype=torch.long, device=device)
        self.started = False

    def reorder(self, index: torch.Tensor, *, sentences: torch.Tensor | None = None) -> None:
        self.prefix = self.prefix.index_select(0, index)


class UncachedModel:
    """The search protocol without incremental state: full forward over the prefix per step."""

    def __init__(self, model):
        self.model = model

    def encode(self, src_ids):
        return self.model.encode(src_ids)

    def init_cache(self, memory, *, max_len: int):
        return _PrefixCache(memory.states.size(0), memory.states.device)

    def decode_step(self, prev_tokens, memory, cache):
        if cache.started:
            cache.prefix = torch.cat([cache.prefix, prev_tokens[:, None]], dim=1)
        cache.started = True
        mask = attention_mask(memory.pad_mask)
        x = self.model.tgt_embed(cache.prefix)
        for layer in self.model.decoder_layers:
            kv = layer.cross_attn.project_memory(memory.states)
            x = layer(x, memory_kv=kv, memory_mask=mask)
        logits = self.model.output(self.model.decoder_norm(x[:, -1]))
        return torch.log_softmax(logits.float(), dim=-1)


def decode_all(model, batches, settings) -> tuple[float, list, int]:
    started = time.perf_counter()
    outputs, tokens = [], 0
    with torch.inference_mode():
        for src in batches:
            for nbest in search(model, src, settings, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID):
                outputs.append(nbest[0].tokens)
                tokens += len(nbest[0].tokens) + 1
    return time.perf_counter() - started, outputs, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("bench/results/decode_cache.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    translator = Engine.from_checkpoint(args.checkpoint)
    model = translator.model.eval()
    lines = [normalize(x) for x in read_lines(args.src)[: args.sentences]]
    ids = translator.tokenizer.encode_src(lines)
    batches = []
    for start in range(0, len(ids), args.batch):
        chunk = [s + [EOS_ID] for s in ids[start : start + args.batch]]
        width = max(len(s) for s in chunk)
        batches.append(torch.tensor([s + [PAD_ID] * (width - len(s)) for s in chunk]))
    settings = SearchSettings(beam_size=args.beam, n_best=1)
    systems = {"cache": model, "no_cache": UncachedModel(model)}

    times: dict[str, list[float]] = {name: [] for name in systems}
    outputs, tokens = {}, {}
    for _ in range(args.repeats):
        for name, system in systems.items():  # alternate A B A B
            seconds, outputs[name], tokens[name] = decode_all(system, batches, settings)
            times[name].append(seconds)
    identical = outputs["cache"] == outputs["no_cache"]
    rows = {}
    for name in systems:
        median = statistics.median(times[name])
        rows[name] = {
            "sentences_per_s": len(lines) / median,
            "tokens_per_s": tokens[name] / median,
            "seconds_median": median,
            "seconds_min": min(times[name]),
            "seconds_max": max(times[name]),
        }
    speedup = rows["no_cache"]["seconds_median"] / rows["cache"]["seconds_median"]
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "cpu_threads": args.threads,
        "torch": torch.__version__,
        "checkpoint": str(args.checkpoint),
        "settings": vars(args)
        | {"checkpoint": str(args.checkpoint), "src": str(args.src), "output": str(args.output)},
        "outputs_identical": identical,
        "results": rows,
        "cache_speedup": speedup,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"beam {args.beam}, batch {args.batch}, {len(lines)} sentences, "
        f"{args.threads} threads, outputs identical: {identical}"
    )
    print(f"{'system':<10} {'sent/s':>8} {'tok/s':>8} {'median s':>9}")
    for name, r in rows.items():
        print(
            f"{name:<10} {r['sentences_per_s']:>8.2f} {r['tokens_per_s']:>8.1f} "
            f"{r['seconds_median']:>9.2f}"
        )
    print(f"cache speedup: {speedup:.2f}x")


if __name__ == "__main__":
    main()
