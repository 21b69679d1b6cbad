"""Label-smoothed cross entropy (Szegedy et al. 2016), as sums over the real tokens.

The trainer divides by the token count of a whole update (all accumulation steps together),
so this function returns sums, never means.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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
    `target == ignore_index` contribute nothing. Everything runs in float32, whatever the
    dtype of `logits` (bf16 under autocast).
    """
    keep = target != ignore_index  # [...]
    safe_target = target.masked_fill(~keep, 0)  # any valid index; masked out below
    vocab = logits.size(-1)
    loss, nll = _SmoothedCrossEntropy.apply(
        logits.float().reshape(-1, vocab), safe_target.reshape(-1), epsilon
    )
    keep = keep.reshape(-1)
    zero = torch.zeros((), dtype=loss.dtype, device=loss.device)
    return LossSums(
        loss=torch.where(keep, loss, zero).sum(),
        nll=torch.where(keep, nll, zero).sum(),
        tokens=keep.sum(),
    )


class _SmoothedCrossEntropy(torch.autograd.Function):
    """Per-token smoothed loss and nll of logits [N, V] (float32) and targets [N].

    Written out by hand because the logits are the largest tensor of a training step (N
    target tokens x V): with log p = logits - logsumexp(logits), the forward needs only row
    reductions (logsumexp, mean, the target's logit) and never materialises log p, and the
    gradient is one [N, V] tensor built in place,

        d loss / d logits = softmax(logits) - q,

    where autograd through log_softmax, gather and mean builds four (about 2% of a base
    model's CPU training step, and the memory of one [N, V] float32 tensor).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, epsilon: float) -> tuple[Tensor, Tensor]:
        lse = torch.logsumexp(logits, dim=-1)  # [N]
        nll = lse - logits.gather(-1, target[:, None]).squeeze(-1)  # -log p_y
        smooth = lse - logits.mean(dim=-1)  # mean_v(-log p_v)
        loss = (1.0 - epsilon) * nll + epsilon * smooth
        ctx.save_for_backward(logits, target, lse)
        ctx.epsilon = epsilon
        ctx.mark_non_differentiable(nll)  # reported, never back-propagated
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_nll: Tensor | None):
        logits, target, lse = ctx.saved_tensors
        eps, vocab = ctx.epsilon, logits.size(-1)
        grad = (logits - lse[:, None]).exp_()  # softmax
        grad.sub_(eps / vocab)
        grad.scatter_add_(
            -1, target[:, None], torch.full_like(lse[:, None], -(1.0 - eps))
        )  # - (1 - eps) at y
        grad.mul_(grad_loss[:, None])
        return grad, None, None
