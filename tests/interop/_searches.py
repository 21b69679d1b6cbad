"""The rules by which the interop tests compare nmt's searches with another system's (a
CTranslate2 or transformers export, a transformers model imported into nmt): the premise that
no search reached the length limit, nmt's scores, and the comparison of outputs line by line.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

TOLERANCE = 1e-4
MIN_SAME = 0.99


def reached_limit(nbest: list, max_len: int, beam: int) -> bool:
    """Whether a search ran to its last step, max_len - 1, from its `beam` best hypotheses.

    Only there does a hypothesis of max_len - 1 tokens end (nmt.decoding.search). A search
    stops early once `beam` hypotheses have finished; if it ran to its last step, fewer had,
    and the `beam` rows still alive all ended there: either way one of the `beam` best (or
    fewer than `beam` in all) has max_len - 1 tokens exactly when the limit was reached.
    """
    return len(nbest) < beam or any(len(h.tokens) == max_len - 1 for h in nbest)


def pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows])


def nmt_log_probs(model, src: list[list[int]], tgt: list[list[int]]) -> list[list[float]]:
    """Teacher-forced log p(y_i | y_<i, x) of each target + EOS under nmt's model."""
    with torch.inference_mode():
        logits = model(
            pad([s + [EOS_ID] for s in src], PAD_ID), pad([[BOS_ID] + t for t in tgt], PAD_ID)
        )
        log_probs = torch.log_softmax(logits.float(), dim=-1)
    return [
        log_probs[i, torch.arange(len(t) + 1), torch.tensor(t + [EOS_ID])].tolist()
        for i, t in enumerate(tgt)
    ]


def score(log_probs: list[float], alpha: float = 1.0) -> float:
    return sum(log_probs) / len(log_probs) ** alpha


def compare_outputs(
    label: str, model, src: list[list[int]], mine: list[list[int]], other: list[list[int]]
) -> None:
    """nmt's outputs `mine` and another system's `other` (nmt's token ids, no EOS) for the
    sources `src`: >= 99 % identical, and each differing line (printed with its score gap
    under nmt's `model`) a near-tie: the gap is < 1e-4. Nothing else is excused."""
    assert len(mine) == len(other) == len(src)
    differ = [i for i, (a, b) in enumerate(zip(mine, other)) if a != b]
    gaps = {}
    for i in differ:
        a, b = nmt_log_probs(model, [src[i]] * 2, [mine[i], other[i]])
        gaps[i] = abs(score(a) - score(b))
        print(f"{label} line {i}: nmt {mine[i]} other {other[i]} score gap {gaps[i]:.2e}")
    assert len(differ) <= (1 - MIN_SAME) * len(mine), f"{len(differ)} lines differ"
    wide = {i: f"{gap:.2e}" for i, gap in gaps.items() if gap >= TOLERANCE}
    assert not wide, f"lines differing by more than a near-tie (line: score gap): {wide}"
