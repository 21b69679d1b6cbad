"""Hard alignments from cross-attention (`nmt translate --print-alignment`), fairseq's format.

For a translation y_0 .. y_{L-1} (pieces, EOS left out) of the source x_0 .. x_{S-1} (pieces,
EOS left out), target piece j is aligned to the source piece

    i*(j) = argmax_i (1/H) sum_h A_h[j, i]

where A_h[j] is head h's cross-attention in the last decoder layer at the step that chose
y_j (decoder input BOS y_0 .. y_{j-1}). The pairs are printed `i*(0)-0 i*(1)-1 ...` (source
index first, as fairseq's `--print-alignment`). The attention comes from one teacher-forced
pass over the finished translation: in eval mode it is the attention search computed at
each step, without keeping attention for every hypothesis search drops. One model only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nmt.data.batching import ListSequences, collate, make_inference_batches
from nmt.decoding.backend import require
from nmt.errors import NmtError

Alignment = list[tuple[int, int]]  # (source piece, target piece) pairs, one per target piece


def hard_alignments(
    translator, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]
) -> list[Alignment]:
    """The alignment of each target id list to its source id list (both without EOS), in
    input order, batch by batch as `nmt.decoding.scoring` scores."""
    layers = _decoder_layers(translator)
    if not sources:
        return []
    found: list[Alignment | None] = [None] * len(sources)
    src, tgt = ListSequences(sources), ListSequences(targets)
    widths = np.fromiter((max(len(s), len(t)) + 1 for s, t in zip(sources, targets)), np.int64)
    translator.model.eval()
    with torch.inference_mode(), translator.autocast(), _LastCrossAttention(layers[-1]) as seen:
        for indices in make_inference_batches(widths, max_tokens=translator.batch_tokens):
            batch = collate(src, tgt, indices).to(translator.device)
            translator.model(batch.src_ids, batch.tgt_in)
            attention = seen.pop().mean(dim=1)  # [B, H, T, S] -> [B, T, S]
            for row, index in enumerate(batch.indices.tolist()):
                found[index] = _pairs(attention[row], len(sources[index]), len(targets[index]))
    return found  # type: ignore[return-value]


def _pairs(attention: torch.Tensor, src_len: int, tgt_len: int) -> Alignment:
    """attention [T, S] of one sentence -> target pieces 0 .. tgt_len-1 with their argmax
    among the source pieces (the source's EOS and padding left out, as fairseq does); none
    without a source piece to point at (an empty source decoded from a prefix)."""
    if src_len == 0:
        return []
    chosen = attention[:tgt_len, :src_len].argmax(dim=-1).tolist()
    return [(i, j) for j, i in enumerate(chosen)]


def align_translation(translator, lines: Sequence[str], translation) -> list[list[str]]:
    """For each line, the formatted alignment of each of its hypotheses (as
    `translation.texts`: [""] for a line without any)."""
    sources = translator.encode_sources(lines)
    pairs = [(i, h) for i, nbest in enumerate(translation.hypotheses) for h in nbest]
    found = hard_alignments(
        translator, [sources[i] for i, _ in pairs], [h.tokens for _, h in pairs]
    )
    formatted: list[list[str]] = [[] for _ in lines]
    for (i, _), alignment in zip(pairs, found):
        formatted[i].append(format_alignment(alignment))
    return [rows or [""] for rows in formatted]


def check_alignment_support(translator, model) -> None:
    """Refused before translating: a CTranslate2 directory or an ensemble has no one
    cross-attention of nmt's model to read."""
    require(translator, "alignment", what=f"{model} is a directory")
    _decoder_layers(translator)


def _decoder_layers(translator):
    layers = getattr(translator.model, "decoder_layers", None)
    if layers is None:
        raise NmtError("--print-alignment needs one checkpoint; an ensemble has no one attention")
    return layers


def format_alignment(alignment: Alignment) -> str:
    """fairseq's `0-0 1-2 ...`: source-target index pairs, space separated."""
    return " ".join(f"{i}-{j}" for i, j in alignment)


class _LastCrossAttention:
    """Records the cross-attention probabilities [B, H, T, S] of one decoder layer for each
    teacher-forced pass, through a forward hook (removed on exit)."""

    def __init__(self, layer):
        self.attention = layer.cross_attn
        self.seen: list[torch.Tensor] = []

    def __enter__(self) -> _LastCrossAttention:
        def record(module, args, kwargs, output):
            x, memory_kv = args
            self.seen.append(module.weights(x, memory_kv, mask=kwargs["mask"]))

        self.handle = self.attention.register_forward_hook(record, with_kwargs=True)
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.remove()

    def pop(self) -> torch.Tensor:
        return self.seen.pop()
