"""Label-smoothed loss against hand-computed values and torch's own implementation."""

from __future__ import annotations

import math
import weakref

import pytest
import torch
import torch.nn.functional as F

from nmt.training.loss import label_smoothed_loss

PAD = 1


def test_hand_computed_two_tokens_three_words():
    # p = softmax(log w) = w / sum(w): token 1 has p = (1/4, 1/2, 1/4), token 2 (1/4, 1/4, 1/2).
    probs = torch.tensor([[[0.25, 0.5, 0.25], [0.25, 0.25, 0.5], [0.2, 0.3, 0.5]]])
    target = torch.tensor([[1, 0, -100]])  # the third position is padding
    out = label_smoothed_loss(probs.log(), target, epsilon=0.1, ignore_index=-100)

    nll = -math.log(1 / 2) - math.log(1 / 4)
    # mean over the 3 words of -log p, per token, summed over the 2 tokens
    smooth = (-math.log(1 / 4) - math.log(1 / 2) - math.log(1 / 4)) / 3 + (
        -math.log(1 / 4) - math.log(1 / 4) - math.log(1 / 2)
    ) / 3
    expected = 0.9 * nll + 0.1 * smooth  # = (1 - eps) * nll + eps * mean_v(-log p_v)

    assert out.tokens.item() == 2
    assert out.nll.item() == pytest.approx(nll, rel=1e-6)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("ignore_index", [PAD, -100])
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_equals_torch_cross_entropy(epsilon: float, ignore_index: int):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=gen) * 3
    target = torch.randint(2, 11, (3, 7), generator=gen)
    target[0, 5:] = ignore_index
    target[2, 3:] = ignore_index

    out = label_smoothed_loss(logits, target, epsilon=epsilon, ignore_index=ignore_index)

    flat_logits, flat_target = logits.view(-1, 11), target.view(-1)
    ref = F.cross_entropy(
        flat_logits,
        flat_target,
        ignore_index=ignore_index,
        label_smoothing=epsilon,
        reduction="sum",
    )
    ref_nll = F.cross_entropy(flat_logits, flat_target, ignore_index=ignore_index, reduction="sum")
    torch.testing.assert_close(out.loss, ref)
    torch.testing.assert_close(out.nll, ref_nll)
    assert out.tokens.item() == int((target != ignore_index).sum())


def test_padded_positions_contribute_nothing():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 9, generator=gen, requires_grad=True)
    target = torch.randint(2, 9, (2, 6), generator=gen)
    target[1, 2:] = PAD
    out = label_smoothed_loss(logits, target, epsilon=0.1, ignore_index=PAD)

    # Whatever sits at the padded positions (even -inf) changes nothing.
    wild = logits.detach().clone()
    wild[1, 2:] = float("-inf")
    wild[1, 2:, 0] = 1e4
    out_wild = label_smoothed_loss(wild, target, epsilon=0.1, ignore_index=PAD)
    torch.testing.assert_close(out_wild.loss, out.loss.detach())
    torch.testing.assert_close(out_wild.nll, out.nll.detach())

    # The same sums as over the real tokens alone, and no gradient reaches the padding.
    real = target != PAD
    alone = label_smoothed_loss(logits[real], target[real], epsilon=0.1, ignore_index=PAD)
    torch.testing.assert_close(alone.loss, out.loss)
    out.loss.backward()
    assert torch.count_nonzero(logits.grad[1, 2:]) == 0
    assert torch.count_nonzero(logits.grad[0]) > 0


def test_epsilon_zero_gives_nll():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 5, 13, generator=gen)
    target = torch.randint(0, 13, (4, 5), generator=gen)
    out = label_smoothed_loss(logits, target, epsilon=0.0, ignore_index=PAD)
    assert torch.equal(out.loss, out.nll)


def test_bf16_logits_are_reduced_in_float32():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 17, generator=gen).to(torch.bfloat16)
    target = torch.randint(2, 17, (2, 4), generator=gen)
    out = label_smoothed_loss(logits, target, epsilon=0.1, ignore_index=PAD)
    ref = label_smoothed_loss(logits.float(), target, epsilon=0.1, ignore_index=PAD)
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss, ref.loss)


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_gradient_equals_autograd_through_torch_cross_entropy(epsilon: float):
    """The hand-written backward (softmax - q) against autograd of the reference."""
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11) * 3
    target = torch.randint(1, 11, (3, 5))
    target[0, -2:] = 0  # padding
    ours_in = logits.clone().requires_grad_()
    ours = label_smoothed_loss(ours_in, target, epsilon=epsilon, ignore_index=0).loss
    (ours_grad,) = torch.autograd.grad(ours * 0.7, ours_in)  # a non-unit upstream gradient
    ref_in = logits.clone().requires_grad_()
    ref = F.cross_entropy(
        ref_in.view(-1, 11),
        target.view(-1),
        ignore_index=0,
        label_smoothing=epsilon,
        reduction="sum",
    )
    (ref_grad,) = torch.autograd.grad(ref * 0.7, ref_in)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(ours_grad, ref_grad, atol=1e-6)
    assert ours_grad[0, -2:].abs().sum() == 0  # padded positions get no gradient


def test_bf16_logits_get_a_bf16_gradient():
    logits = torch.randn(2, 4, 7).to(torch.bfloat16).requires_grad_()
    target = torch.randint(1, 7, (2, 4))
    label_smoothed_loss(logits, target, epsilon=0.1, ignore_index=0).loss.backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()


def test_extreme_logits_give_exact_finite_losses():
    """A target 1000 nats below the best word: p_y underflows to 0 in float32, yet the
    loss comes from logsumexp - logit_y, so it is exact, as is its gradient."""
    logits = torch.tensor([[[1000.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    target = torch.tensor([[1, 2]])
    out = label_smoothed_loss(logits, target, epsilon=0.1, ignore_index=-100)
    uniform = math.log(3)
    assert out.nll.item() == pytest.approx(1000.0 + uniform)
    # token 1: nll 1000, smooth mean(1000, 1000, 0) = 2000/3; token 2: uniform
    expected = 0.9 * 1000 + 0.1 * 2000 / 3 + uniform
    assert out.loss.item() == pytest.approx(expected)
    out.loss.backward()
    expected_grad = torch.tensor(
        [[[1 - 0.1 / 3, -0.9 - 0.1 / 3, -0.1 / 3], [1 / 3 - 0.1 / 3] * 2 + [1 / 3 - 0.9 - 0.1 / 3]]]
    )
    torch.testing.assert_close(logits.grad, expected_grad)


def test_a_second_backward_fails_loudly():
    """The backward writes the gradient into the saved softmax: a second backward must not
    compute from the overwritten values."""
    logits = torch.randn(4, 9, requires_grad=True)
    loss = label_smoothed_loss(logits, torch.tensor([1, 2, 3, 4]), epsilon=0.1, ignore_index=0)
    loss.loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.loss.backward()


def test_the_backward_does_not_keep_the_logits_alive():
    """The trainer frees the [N, V] logits before its backward: the loss must not hold them."""
    weights = torch.randn(2, 3, 7, requires_grad=True)
    logits = weights * 2.0  # a non-leaf, as a model's output
    alive = weakref.ref(logits)
    out = label_smoothed_loss(logits, torch.tensor([[1, 2, 3]] * 2), epsilon=0.1, ignore_index=0)
    del logits
    assert alive() is None
    out.loss.backward()
    assert weights.grad is not None and weights.grad.abs().sum() > 0
