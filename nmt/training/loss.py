"""Label-smoothed cross entropy (Szegedy et al. 2016), as sums over the real tokens.

The trainer divides by the token count of a whole update (all accumulation steps together),
so this function returns sums, never means.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class LossSums:
    """Sums over the non-ignored tokens of one batch (0-dim tensors).

    loss: the label-smoothed loss (what to back-propagate), nll: the plain negative
    log-likelihood (for perplexity), tokens: how many target tokens were counted (int64).
    """

    loss: Tensor
    nll: Tensor
    tokens: Tensor


def label_smoothed_loss(
    logits: Tensor, target: Tensor, *, epsilon: float, ignore_index: int
) -> LossSums:
    """Label-smoothed cross entropy of `logits` [..., V] against `target` [...] (int64).

    The smoothed target is q = (1 - eps) * onehot(y) + eps / V, so per token

        loss = -sum_v q_v log p_v = (1 - eps) * nll + eps * mean_v(-log p_v),
        nll  = -log p_y,

    which equals `F.cross_entropy(..., label_smoothing=eps)`. Positions where
    `target == ignore_index` contribute nothing. log_softmax runs once, in float32, whatever
    the dtype of `logits` (bf16 under autocast).
    """
    lprobs = F.log_softmax(logits.float(), dim=-1)  # [..., V]
    keep = target != ignore_index  # [...]
    safe_target = target.masked_fill(~keep, 0)  # any valid index; masked out below
    nll = -lprobs.gather(-1, safe_target.unsqueeze(-1)).squeeze(-1)  # [...]
    smooth = -lprobs.mean(dim=-1)  # [...]
    loss = (1.0 - epsilon) * nll + epsilon * smooth
    zero = torch.zeros((), dtype=lprobs.dtype, device=lprobs.device)
    return LossSums(
        loss=torch.where(keep, loss, zero).sum(),
        nll=torch.where(keep, nll, zero).sum(),
        tokens=keep.sum(),
    )
