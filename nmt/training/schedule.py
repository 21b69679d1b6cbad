"""Inverse-square-root learning rate with linear warmup (Vaswani et al. 2017; fairseq's
`inverse_sqrt`), as a multiplier for torch's `LambdaLR`.

With peak lr L, warmup W and initial lr L0, the lr after `step` optimizer updates is

    lr(step) = L0 + (L - L0) * step / W      for step < W     (linear warmup)
    lr(step) = L * sqrt(W / step)            for step >= W    (inverse square root)

so lr(0) = L0, lr(W) = L and lr(4W) = L / 2. With W = 0 there is no warmup and the decay
is taken as if W were 1: lr(step) = L / sqrt(max(step, 1)), i.e. L for steps 0 and 1,
then L / sqrt(step). (fairseq's formula would give lr 0 here, which is never wanted.)

`LambdaLR` multiplies each group's base lr by the multiplier, so the base lr must be L:
`build_scheduler` sets it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from nmt.config import TrainConfig


@dataclass(frozen=True)
class InverseSqrtMultiplier:
    """`lr(step) / lr` for the schedule in the module docstring.

    A dataclass, not a closure: `LambdaLR.state_dict()` stores a callable object's fields
    (three numbers here), so scheduler state goes into weights-only checkpoints.
    """

    lr: float
    warmup_updates: int
    warmup_init_lr: float

    def lr_at(self, step: int) -> float:
        """The learning rate after `step` optimizer updates."""
        if step < self.warmup_updates:
            return (
                self.warmup_init_lr + (self.lr - self.warmup_init_lr) * step / self.warmup_updates
            )
        return self.lr * math.sqrt(max(self.warmup_updates, 1) / max(step, 1))

    def __call__(self, step: int) -> float:
        return self.lr_at(step) / self.lr


def inverse_sqrt_multiplier(
    *, lr: float, warmup_updates: int, warmup_init_lr: float
) -> InverseSqrtMultiplier:
    """The multiplier `step -> lr(step) / lr` to give `LambdaLR` (see the module docstring)."""
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if warmup_updates < 0:
        raise ValueError(f"warmup_updates must be >= 0, got {warmup_updates}")
    return InverseSqrtMultiplier(
        lr=lr, warmup_updates=warmup_updates, warmup_init_lr=warmup_init_lr
    )


def build_scheduler(optimizer: Optimizer, train: TrainConfig) -> LambdaLR:
    """A `LambdaLR` following the schedule of `train` (lr, warmup_updates, warmup_init_lr).

    Every param group's lr is set to `train.lr` first (the base the multiplier scales), so
    right after construction the optimizer's lr is lr(0) = warmup_init_lr, and after k calls
    of `scheduler.step()` (one per optimizer update) it is lr(k).
    """
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = train.lr
    multiplier = inverse_sqrt_multiplier(
        lr=train.lr, warmup_updates=train.warmup_updates, warmup_init_lr=train.warmup_init_lr
    )
    return LambdaLR(optimizer, lr_lambda=multiplier)
