"""Ensembles: several models decoding as one `SearchModel` (`nmt.decoding.search`).

At every step the ensemble's log-prob of a token is the average of its members' log-probs,

    log p_ens(y | y_<t, x) = (1/M) sum_m log p_m(y | y_<t, x)

(Marian's ensemble with equal weights; a log-linear mixture, not renormalised: fairseq
instead averages the probabilities). Each member keeps its own encoder memory and decoder
cache; search reorders them all alike. An ensemble of one is its member; of M copies of one
model, that model. Members must share the tokenizer, so that ids mean the same pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from nmt.errors import NmtError


@dataclass(frozen=True)
class EnsembleMemory:
    parts: tuple  # one Memory per member

    def index_select(self, index: Tensor) -> EnsembleMemory:
        return EnsembleMemory(tuple(part.index_select(index) for part in self.parts))


@dataclass(frozen=True)
class EnsembleCache:
    parts: tuple  # one DecoderCache per member

    def reorder(self, index: Tensor, *, sentences: Tensor | None = None) -> None:
        for part in self.parts:
            part.reorder(index, sentences=sentences)


class Ensemble:
    """M models (SearchModels) as one; `cfg`, for models that have one, is the first
    member's with the smallest max_positions of all (the position table every member can
    decode within)."""

    def __init__(self, members: Sequence):
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = list(members)
        if all(hasattr(m, "cfg") for m in members):
            positions = min(m.cfg.max_positions for m in members)
            self.cfg = replace(members[0].cfg, max_positions=positions)

    def eval(self) -> Ensemble:
        for member in self.members:
            member.eval()
        return self

    def encode(self, src_ids: Tensor) -> EnsembleMemory:
        return EnsembleMemory(tuple(m.encode(src_ids) for m in self.members))

    def init_cache(self, memory: EnsembleMemory, *, max_len: int) -> EnsembleCache:
        parts = zip(self.members, memory.parts)
        return EnsembleCache(tuple(m.init_cache(part, max_len=max_len) for m, part in parts))

    def decode_step(self, prev_tokens: Tensor, memory: EnsembleMemory, cache: EnsembleCache):
        """prev_tokens [N] -> the members' mean log-probs, float32 [N, V]."""
        steps = [
            m.decode_step(prev_tokens, part, part_cache)
            for m, part, part_cache in zip(self.members, memory.parts, cache.parts)
        ]
        return torch.stack(steps).mean(dim=0)


def check_same_tokenizer(tokenizers: Sequence, paths: Sequence) -> None:
    """Members whose SentencePiece models differ would read each other's ids as other
    pieces: refused, naming the first checkpoint that differs from the first one."""
    first = tokenizers[0]
    for tokenizer, path in zip(tokenizers[1:], paths[1:]):
        if (tokenizer.src_model, tokenizer.tgt_model) != (first.src_model, first.tgt_model):
            raise NmtError(
                f"cannot ensemble {paths[0]} and {path}: their SentencePiece models differ "
                "(an ensemble's members must share the tokenizer)"
            )
