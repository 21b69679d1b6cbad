"""CPU dropout from 16-bit lanes: the drop rate, the scale, the gradient and the seed."""

from __future__ import annotations

import pytest
import torch

from nmt.model.dropout import Dropout, keep_mask


def test_drop_rate_is_p_rounded_to_a_lane_in_every_lane_position():
    torch.manual_seed(0)
    keep, scale = keep_mask(torch.Size([1_000_000]), 0.1)
    assert keep.dtype == torch.bool
    assert scale == 65536 / (65536 - 6554)  # p = 6554 / 65536 = 0.100006
    # Each 16-bit lane of a 64-bit draw decides one element: all four must be uniform.
    # 250k elements per lane position: one standard deviation of the rate is 0.0006.
    for lane in range(4):
        assert abs(1 - keep[lane::4].float().mean().item() - 0.1) < 0.003
    # Neighbouring lanes are independent: both dropped with probability p^2.
    pairs = (~keep[0::4] & ~keep[1::4]).float().mean().item()
    assert abs(pairs - 0.01) < 0.001


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_kept_elements_are_scaled_to_keep_the_expectation(p):
    torch.manual_seed(1)
    x = torch.rand(1000, 500) + 0.5
    y = Dropout(p)(x)
    kept = y != 0
    k = round(p * 65536)
    assert torch.equal(y[kept], x[kept] * (65536 / (65536 - k)))
    assert abs(1 - kept.float().mean().item() - p) < 0.005
    assert abs(y.mean().item() / x.mean().item() - 1) < 0.01


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)  # 2112 elements: not a multiple of 4 lanes
    y = Dropout(0.25)(x)
    weights = torch.randn_like(y)
    (y * weights).sum().backward()
    kept = y.detach() != 0
    scale = 65536 / (65536 - 16384)
    assert torch.equal(x.grad, torch.where(kept, weights * scale, torch.zeros_like(weights)))
    assert 0 < kept.sum() < kept.numel()


def test_masks_follow_the_seed():
    x = torch.ones(100, 100)
    torch.manual_seed(3)
    first, second = Dropout(0.1)(x), Dropout(0.1)(x)
    torch.manual_seed(3)
    assert torch.equal(Dropout(0.1)(x), first)
    assert not torch.equal(first, second)


def test_eval_mode_and_unrepresentable_rates_are_torch_dropout():
    x = torch.randn(10, 10)
    assert Dropout(0.5).eval()(x) is x
    assert torch.equal(Dropout(0.0)(x), x)
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))  # k = 65536: torch's dropout
    torch.manual_seed(4)
    tiny = Dropout(1e-6)(x)  # k = 0: torch's dropout, not a rate of 0
    torch.manual_seed(4)
    assert torch.equal(tiny, torch.nn.functional.dropout(x, 1e-6, training=True))
