"""One training update: forward, loss, backward over the accumulated batches, then clip and
step. The one copy, called by the Trainer and by bench/train_speed.py, so the benchmark
times exactly what training runs.

Per update, with G batches accumulated and N target tokens over all of them (and all
processes): gradient = sum over batches of d(loss_b)/dθ / N, the mean smoothed loss per
target token, as fairseq normalises by sample size.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from nmt.data.batching import Batch
from nmt.data.tokenizer import PAD_ID
from nmt.training.loss import label_smoothed_loss


@dataclass(frozen=True)
class StepParts:
    """What an update touches. `run_model` is what the batches go through (the compiled or
    DDP-wrapped model); `model` is the plain module whose gradients are clipped."""

    model: nn.Module
    run_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    autocast: Callable[[], AbstractContextManager]
    label_smoothing: float
    clip_norm: float  # 0: no clipping
    world_size: int = 1
    distributed: bool = False


@dataclass(frozen=True)
class StepResult:
    loss: float  # label-smoothed loss sum over this process's batches
    nll: float
    grad_norm: float
    finite: bool  # False: the update was skipped (non-finite loss or gradient)


def training_step(parts: StepParts, batches: Sequence[Batch], *, total_tokens: int) -> StepResult:
    """One optimizer update from `batches` (on the device), normalised by `total_tokens`,
    the target tokens of the update over all processes. The scheduler steps only with an
    applied update."""
    parts.optimizer.zero_grad(set_to_none=True)
    loss_sum, nll_sum = _accumulate(parts, batches, total_tokens)
    return _apply(parts, loss_sum, nll_sum)


def _accumulate(
    parts: StepParts, batches: Sequence[Batch], total_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward of every batch; gradients add up. Returns the loss and nll sums (on device)."""
    device = batches[0].src_ids.device
    loss_sum = nll_sum = torch.zeros((), device=device)
    for i, batch in enumerate(batches):
        sync = contextlib.nullcontext()
        if parts.distributed and i < len(batches) - 1:
            sync = parts.run_model.no_sync()  # DDP: one all-reduce per update, at the last
        with sync:
            with parts.autocast():
                logits = parts.run_model(batch.src_ids, batch.tgt_in)
            sums = label_smoothed_loss(
                logits, batch.tgt_out, epsilon=parts.label_smoothing, ignore_index=PAD_ID
            )
            # The backward needs only the loss's own softmax: freeing the [N, V] logits
            # now lowers the peak memory of the backward by their size.
            del logits
            # DDP averages gradients over processes; * world_size makes it a global sum.
            parts.scaler.scale(sums.loss * parts.world_size / total_tokens).backward()
        loss_sum = loss_sum + sums.loss.detach()
        nll_sum = nll_sum + sums.nll.detach()
    return loss_sum, nll_sum


def _apply(parts: StepParts, loss_sum: torch.Tensor, nll_sum: torch.Tensor) -> StepResult:
    """Clip, check for non-finite values, step.

    Loss, nll and norm come to the host in one transfer: one device sync per update."""
    parts.scaler.unscale_(parts.optimizer)
    max_norm = parts.clip_norm or math.inf
    norm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), max_norm)
    loss, nll, norm_value = torch.stack([loss_sum, nll_sum, norm.to(loss_sum)]).tolist()
    finite = math.isfinite(loss) and math.isfinite(norm_value)
    if parts.scaler.is_enabled():
        # fp16: the scaler skips steps with inf gradients itself and lowers its scale.
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        finite = math.isfinite(loss)
    elif finite:
        parts.optimizer.step()
    if finite:
        parts.scheduler.step()
    return StepResult(loss, nll, norm_value, finite)
