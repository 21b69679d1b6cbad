"""Dropout whose CPU mask needs a quarter of the random numbers of torch's.

torch's CPU dropout draws one random number per element (`bernoulli_`), which made dropout
5.6% of a `base` training update on the CPU (torch.profiler, 32 dropouts per update), as
much as all of attention. Here one 64-bit draw decides four elements: each 16-bit lane of
it is dropped when it falls below k = round(p * 65536), and the kept elements are scaled by
65536 / (65536 - k). The drop rate is thus p rounded to a multiple of 1/65536 (0.1 becomes
0.100006) and the expectation of the output is exactly the input. Forward and backward are
each one fused pass, x * mask * scale (`native_dropout_backward`), and the mask is kept as
bool, as torch keeps its own. On [3800, 500] floats, forward + backward measured 12.4 ms
against 23.6 ms for `F.dropout` on the 2-core CPU of docs/benchmarks.md.

The random numbers come from torch's default CPU generator, so `torch.manual_seed` and the
trainer's saved RNG state reproduce the masks exactly. Everywhere else (CUDA, whose dropout
is one fused Philox kernel, and under torch.compile, which generates its own) this is
torch's dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LANES = 65536  # values of one 16-bit lane


class Dropout(nn.Dropout):
    """`nn.Dropout` (not in place) with the CPU mask drawn 16 bits per element."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and _lane_threshold(self.p) and _eager_on_cpu(x):
            return _LaneDropout.apply(x, self.p)
        return F.dropout(x, self.p, self.training, self.inplace)


def _eager_on_cpu(x: Tensor) -> bool:
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def _lane_threshold(p: float) -> int:
    """k: a lane below k - 32768 (as int16) is dropped; 0 where 16 bits cannot express p
    (p under 1/131072 or over 1 - 1/131072), for which torch's dropout is used."""
    k = round(p * _LANES)
    return k if 0 < k < _LANES else 0


def keep_mask(shape: torch.Size, p: float) -> tuple[Tensor, float]:
    """A bool mask of `shape` keeping each element with probability 1 - k/65536, and the
    scale 65536 / (65536 - k) of the kept elements (k from `_lane_threshold`, nonzero)."""
    k = _lane_threshold(p)
    count = shape.numel()
    # random_(-2**63, None) fills every bit of an int64: four independent uniform int16.
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    lanes = words.view(torch.int16)[:count].view(shape)
    return lanes >= k - _LANES // 2, _LANES / (_LANES - k)


class _LaneDropout(torch.autograd.Function):
    """y = x * mask * scale; dy/dx = mask * scale."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        keep, scale = keep_mask(x.shape, p)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.ops.aten.native_dropout_backward(x, keep, scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (keep,) = ctx.saved_tensors
        return torch.ops.aten.native_dropout_backward(grad, keep, ctx.scale), None
