"""grouped_topk (block maxima, then a top-C of the best blocks) finds exactly what torch.topk
finds over each sentence's k * V scores."""

from __future__ import annotations

import pytest
import torch

from nmt.decoding.topk import BLOCK, grouped_topk

NEG_INF = float("-inf")


def plain_topk(log_probs, row_scores, *, groups, count):
    total = (row_scores[:, None] + log_probs).reshape(groups, -1)
    return total.topk(count, dim=1)


def random_step(groups: int, k: int, vocab: int, *, seed: int = 0):
    """Log-probs [groups*k, vocab] of a peaked random distribution, row scores [groups*k]."""
    gen = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(groups * k, vocab, generator=gen)
    row_scores = -10 * torch.rand(groups * k, generator=gen)
    return torch.log_softmax(logits, dim=-1), row_scores


@pytest.mark.parametrize(
    "groups, k, vocab, count",
    [
        (16, 5, 10 * BLOCK, 10),  # whole blocks only
        (16, 5, 10_000, 10),  # 10,000 = 156 blocks of 64 and a tail of 16
        (3, 1, 7 * BLOCK + 1, 10),  # first beam step (k = 1), tail of one column
        (2, 4, 3 * BLOCK + 5, 12),  # exactly as many blocks as candidates
        (1, 5, 5 * BLOCK, 3),
    ],
)
def test_matches_torch_topk(groups, k, vocab, count):
    log_probs, row_scores = random_step(groups, k, vocab)
    values, flat = grouped_topk(log_probs, row_scores, groups=groups, count=count)
    want_values, want_flat = plain_topk(log_probs, row_scores, groups=groups, count=count)
    assert torch.equal(values, want_values)
    assert torch.equal(flat, want_flat)


def test_candidates_crowded_into_one_block_and_the_tail():
    """All of a sentence's best entries in a single block of one row, and in the tail: the
    re-ranking must take every entry of that block, not one per block."""
    groups, k, vocab = 2, 3, 4 * BLOCK + 7
    log_probs = torch.full((groups * k, vocab), -50.0)
    log_probs[1, BLOCK : BLOCK + 6] = torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0, -6.0])
    log_probs[4, -4:] = torch.tensor([-0.5, -1.5, -2.5, -3.5])  # sentence 1, in the tail
    log_probs[5, 0] = -0.25
    row_scores = torch.zeros(groups * k)
    values, flat = grouped_topk(log_probs, row_scores, groups=groups, count=5)
    assert values[0].tolist() == [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert flat[0].tolist() == [vocab + BLOCK + i for i in range(5)]  # local row 1
    assert values[1].tolist() == [-0.25, -0.5, -1.5, -2.5, -3.5]
    assert flat[1].tolist() == [2 * vocab] + [vocab + vocab - 4 + i for i in range(4)]


def test_masked_rows_keep_their_only_finite_entry():
    """Rows at their last step allow EOS only: each sentence then has k finite candidates,
    and those come first; the rest are -inf, as torch.topk gives them."""
    groups, k, vocab, eos = 4, 5, 10_000, 3
    log_probs, row_scores = random_step(groups, k, vocab, seed=1)
    eos_column = log_probs[:, eos].clone()
    log_probs.fill_(NEG_INF)
    log_probs[:, eos] = eos_column
    values, flat = grouped_topk(log_probs, row_scores, groups=groups, count=2 * k)
    want_values, want_flat = plain_topk(log_probs, row_scores, groups=groups, count=2 * k)
    assert torch.equal(values, want_values)
    assert torch.equal(flat[:, :k], want_flat[:, :k])
    assert values[:, k:].eq(NEG_INF).all()


def test_ties_give_the_same_values():
    """Equal scores may come in another order, never with other values."""
    groups, k, vocab = 2, 5, 2 * BLOCK + 3
    log_probs = torch.log_softmax(torch.randint(0, 3, (groups * k, vocab)).float(), dim=-1)
    row_scores = torch.zeros(groups * k)
    values, flat = grouped_topk(log_probs, row_scores, groups=groups, count=10)
    want_values, _ = plain_topk(log_probs, row_scores, groups=groups, count=10)
    assert torch.equal(values, want_values)
    total = (row_scores[:, None] + log_probs).reshape(groups, -1)
    assert torch.equal(total.gather(1, flat), values)  # each index points at its value
    assert all(len(set(row)) == 10 for row in flat.tolist())  # and no entry twice


def test_small_vocabulary_falls_back_to_topk():
    """Fewer blocks than candidates: the plain form, same answer."""
    log_probs, row_scores = random_step(3, 2, BLOCK + 10)
    got = grouped_topk(log_probs, row_scores, groups=3, count=4)
    want = plain_topk(log_probs, row_scores, groups=3, count=4)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
