"""Batching: exact tensors from collate, exact groups from make_batches, epoch shuffling,
weighted epochs of several corpora."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nmt.data.batching import (
    Batch,
    CorpusMix,
    batches_for_epoch,
    collate,
    epoch_pairs,
    make_batches,
    make_inference_batches,
    padding_fraction,
    weighted_batches,
)
from nmt.data.binarize import TokenArray, write_token_array
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


class FakeTokens:
    """The TokenArray interface over in-memory rows."""

    def __init__(self, rows: list[list[int]]):
        self.rows = [np.asarray(r, dtype=np.int64) for r in rows]
        self.lengths = np.array([len(r) for r in self.rows], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.rows[i]


SRC_ROWS = [[5, 6, 7], [8], [9, 10]]
TGT_ROWS = [[11, 12], [13, 14, 15], []]


def long_tensor(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


# --------------------------------------------------------------------------- collate


def test_collate_gives_exact_tensors():
    batch = collate(FakeTokens(SRC_ROWS), FakeTokens(TGT_ROWS), [2, 0])
    E, B = EOS_ID, BOS_ID
    assert torch.equal(batch.src_ids, long_tensor([[9, 10, E, PAD_ID], [5, 6, 7, E]]))
    assert torch.equal(batch.tgt_in, long_tensor([[B, PAD_ID, PAD_ID], [B, 11, 12]]))
    assert torch.equal(batch.tgt_out, long_tensor([[E, PAD_ID, PAD_ID], [11, 12, E]]))
    assert batch.src_ids.dtype == torch.long
    np.testing.assert_array_equal(batch.indices, [2, 0])
    assert (batch.num_src_tokens, batch.num_tgt_tokens) == (3 + 4, 1 + 3)
    assert (len(batch), batch.src_slots, batch.tgt_slots) == (2, 8, 6)
    assert padding_fraction(batch) == pytest.approx(3 / 14)


def test_collate_without_target_for_translation():
    batch = collate(FakeTokens(SRC_ROWS), None, np.array([1]))
    assert torch.equal(batch.src_ids, long_tensor([[8, EOS_ID]]))
    assert batch.tgt_in is None and batch.tgt_out is None
    assert (batch.num_tgt_tokens, batch.tgt_slots) == (0, 0)
    assert padding_fraction(batch) == 0.0


def test_collate_reads_a_real_token_array(tmp_path):
    write_token_array(tmp_path / "train.de", SRC_ROWS, vocab_size=100)
    write_token_array(tmp_path / "train.en", TGT_ROWS, vocab_size=100)
    src, tgt = TokenArray(tmp_path / "train.de"), TokenArray(tmp_path / "train.en")
    batch = collate(src, tgt, [1, 2])
    assert torch.equal(batch.src_ids, long_tensor([[8, EOS_ID, PAD_ID], [9, 10, EOS_ID]]))
    assert torch.equal(batch.tgt_in, long_tensor([[BOS_ID, 13, 14, 15], [BOS_ID, 0, 0, 0]]))
    assert torch.equal(batch.tgt_out, long_tensor([[13, 14, 15, EOS_ID], [EOS_ID, 0, 0, 0]]))


def test_collate_rejects_empty_indices():
    with pytest.raises(ValueError, match="non-empty"):
        collate(FakeTokens(SRC_ROWS), None, [])


def test_to_returns_a_new_batch_and_keeps_indices_on_host():
    batch = collate(FakeTokens(SRC_ROWS), FakeTokens(TGT_ROWS), [0, 1])
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and moved is not batch
    assert torch.equal(moved.tgt_out, batch.tgt_out)
    assert isinstance(moved.indices, np.ndarray)
    assert moved.num_src_tokens == batch.num_src_tokens
    assert collate(FakeTokens(SRC_ROWS), None, [0]).to("cpu").tgt_in is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pin_memory_then_copy_to_gpu():
    batch = collate(FakeTokens(SRC_ROWS), FakeTokens(TGT_ROWS), [0, 1]).pin_memory()
    assert batch.src_ids.is_pinned() and batch.tgt_in.is_pinned()
    on_gpu = batch.to("cuda")
    assert on_gpu.src_ids.is_cuda and torch.equal(on_gpu.tgt_out.cpu(), batch.tgt_out)


row_lists = st.lists(st.lists(st.integers(4, 50), max_size=8), min_size=1, max_size=6)


@settings(max_examples=50, deadline=None)
@given(rows=row_lists, data=st.data())
def test_collate_rows_are_sentence_plus_specials_then_padding(rows, data):
    tgt_rows = data.draw(
        st.lists(st.lists(st.integers(4, 50), max_size=8), min_size=len(rows), max_size=len(rows))
    )
    indices = data.draw(st.permutations(range(len(rows))))
    batch = collate(FakeTokens(rows), FakeTokens(tgt_rows), indices)
    for b, i in enumerate(indices):
        src, tgt = rows[i], tgt_rows[i]
        pad_s = [PAD_ID] * (batch.src_ids.shape[1] - len(src) - 1)
        pad_t = [PAD_ID] * (batch.tgt_in.shape[1] - len(tgt) - 1)
        assert batch.src_ids[b].tolist() == src + [EOS_ID] + pad_s
        assert batch.tgt_in[b].tolist() == [BOS_ID] + tgt + pad_t
        assert batch.tgt_out[b].tolist() == tgt + [EOS_ID] + pad_t


# --------------------------------------------------------------------------- make_batches


def as_lists(batches: list[np.ndarray]) -> list[list[int]]:
    return [b.tolist() for b in batches]


def test_make_batches_exact_groups():
    # widths (max side + 1): [4, 5, 8, 4, 3, 10, 2]; sorted: 6, 4, 0, 3, 1, 2, 5
    src = np.array([3, 1, 7, 3, 2, 9, 1])
    tgt = np.array([2, 4, 7, 2, 1, 2, 0])
    batches = make_batches(src, tgt, max_tokens=16)
    # [6,4,0,3]: 4 * 4 = 16; adding 1 would give 5 * 5; [1,2]: 2 * 8; [5]: 10
    assert as_lists(batches) == [[6, 4, 0, 3], [1, 2], [5]]


def test_make_batches_ties_follow_bucket_side():
    src, tgt = np.array([3, 1, 3]), np.array([1, 3, 1])  # every width is 4
    assert as_lists(make_batches(src, tgt, max_tokens=8)) == [[1, 0], [2]]
    assert as_lists(make_batches(src, tgt, max_tokens=8, bucket_by="src")) == [[1, 0], [2]]
    assert as_lists(make_batches(src, tgt, max_tokens=8, bucket_by="tgt")) == [[0, 2], [1]]


def test_make_batches_source_only():
    assert as_lists(make_batches(np.array([5, 1, 2]), None, max_tokens=6)) == [[1, 2], [0]]


def test_make_batches_rejects_a_sentence_over_budget():
    with pytest.raises(ValueError, match=r"sentence 1 needs 21 padded tokens.*max_tokens=16"):
        make_batches(np.array([3, 20]), np.array([3, 5]), max_tokens=16)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 8, "bucket_by": "longest"}, "bucket_by"),
    ],
)
def test_make_batches_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_batches(np.array([1]), np.array([1]), **kwargs)


def test_make_batches_rejects_misaligned_lengths():
    with pytest.raises(ValueError, match="aligned"):
        make_batches(np.array([1, 2]), np.array([1]), max_tokens=8)


def test_make_batches_is_empty_for_an_empty_corpus():
    assert make_batches(np.array([], dtype=int), np.array([], dtype=int), max_tokens=8) == []


pair_lengths = st.lists(
    st.tuples(st.integers(1, 200), st.integers(1, 200)), min_size=1, max_size=300
)


@settings(max_examples=100, deadline=None)
@given(
    pairs=pair_lengths,
    max_tokens=st.integers(202, 5000),
    bucket_by=st.sampled_from(["max", "src", "tgt"]),
)
def test_make_batches_covers_every_pair_once_within_budget(pairs, max_tokens, bucket_by):
    src, tgt = np.array(pairs).T
    batches = make_batches(src, tgt, max_tokens=max_tokens, bucket_by=bucket_by)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(pairs)))
    for b in batches:
        assert len(b) >= 1
        assert len(b) * (src[b].max() + 1) <= max_tokens
        assert len(b) * (tgt[b].max() + 1) <= max_tokens


@settings(max_examples=10, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=40),
    max_tokens=st.integers(32, 200),
)
def test_collated_batches_fit_the_budget(pairs, max_tokens):
    src_rows = [[7] * s for s, _ in pairs]
    tgt_rows = [[8] * t for _, t in pairs]
    src, tgt = np.array(pairs).T
    for indices in make_batches(src, tgt, max_tokens=max_tokens):
        batch = collate(FakeTokens(src_rows), FakeTokens(tgt_rows), indices)
        assert batch.src_slots <= max_tokens and batch.tgt_slots <= max_tokens


def multi30k_like_lengths(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Subword lengths 5..40 around 16 pieces, the target correlated with the source."""
    rng = np.random.default_rng(0)
    src = np.clip(np.rint(rng.lognormal(np.log(16), 0.35, n)), 5, 40).astype(np.int64)
    tgt = np.clip(np.rint(src * rng.normal(0.95, 0.12, n)), 5, 40).astype(np.int64)
    return src, tgt


def test_padding_is_under_ten_percent_on_realistic_lengths():
    src_len, tgt_len = multi30k_like_lengths(29_000)
    src = FakeTokens([np.full(n, 9) for n in src_len])
    tgt = FakeTokens([np.full(n, 9) for n in tgt_len])
    pads = slots = 0
    for indices in make_batches(src_len, tgt_len, max_tokens=4096):
        batch = collate(src, tgt, indices)
        all_slots = batch.src_slots + batch.tgt_slots
        pads += padding_fraction(batch) * all_slots
        slots += all_slots
    assert pads / slots < 0.10


# --------------------------------------------------------------------------- inference


def test_make_inference_batches_longest_first():
    # widths [4, 1, 10, 6, 4] -> order 2, 3, 0, 4, 1
    lengths = np.array([3, 0, 9, 5, 3])
    assert as_lists(make_inference_batches(lengths, max_tokens=12)) == [[2], [3, 0], [4, 1]]


def test_make_inference_batches_keeps_an_over_budget_sentence_alone():
    assert as_lists(make_inference_batches(np.array([20, 1]), max_tokens=8)) == [[0], [1]]


def test_inference_order_is_restored_with_indices():
    rows = [[5] * n for n in (3, 0, 9, 5, 3)]
    lengths = np.array([len(r) for r in rows])
    restored: list[list[int] | None] = [None] * len(rows)
    for indices in make_inference_batches(lengths, max_tokens=12):
        batch = collate(FakeTokens(rows), None, indices)
        for row, i in zip(batch.src_ids.tolist(), batch.indices.tolist(), strict=True):
            restored[i] = row[: row.index(EOS_ID)]
    assert restored == rows


# --------------------------------------------------------------------------- epochs


BATCHES = [np.arange(i, i + 1 + i % 3) for i in range(10)]


def keys(batches: list[np.ndarray]) -> list[tuple[int, ...]]:
    return [tuple(b.tolist()) for b in batches]


def test_epoch_shuffle_is_deterministic_and_a_permutation():
    first = batches_for_epoch(BATCHES, seed=1, epoch=0)
    again = batches_for_epoch(BATCHES, seed=1, epoch=0)
    assert keys(first) == keys(again)
    assert sorted(keys(first)) == sorted(keys(BATCHES))  # batch contents unchanged
    assert keys(first) != keys(BATCHES)


def test_epoch_shuffle_differs_across_epochs_and_seeds():
    orders = {
        tuple(keys(batches_for_epoch(BATCHES, seed=s, epoch=e))) for s in (1, 2) for e in (0, 1)
    }
    assert len(orders) == 4


def test_sharding_gives_equal_disjoint_shards_of_the_shuffled_order():
    full = batches_for_epoch(BATCHES, seed=3, epoch=5)
    shards = [batches_for_epoch(BATCHES, seed=3, epoch=5, rank=r, world_size=3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]  # 10 batches: the last one is dropped
    for r, shard in enumerate(shards):
        assert keys(shard) == keys(full[:9][r::3])
    flat = [k for shard in shards for k in keys(shard)]
    assert len(set(flat)) == len(flat) == 9


def test_sharding_with_fewer_batches_than_ranks_is_empty_everywhere():
    assert batches_for_epoch(BATCHES[:2], seed=0, epoch=0, rank=1, world_size=4) == []


@pytest.mark.parametrize(
    "kwargs", [{"rank": 2, "world_size": 2}, {"rank": -1}, {"world_size": 0}, {"epoch": -1}]
)
def test_batches_for_epoch_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        batches_for_epoch(BATCHES, **{"seed": 0, "epoch": 0, **kwargs})


# --------------------------------------------------------------------------- several corpora

# Three corpora lying one after another: 1000 pairs at weight 1, 300 at weight 4 (each pair
# four times an epoch), 50 at weight 0.5 (half of them, drawn afresh each epoch).
MIX = CorpusMix(sizes=(1000, 300, 50), weights=(1.0, 4.0, 0.5))
BOUNDS = np.cumsum((0, *MIX.sizes))


def corpus_of(pairs: np.ndarray) -> np.ndarray:
    return np.searchsorted(BOUNDS, pairs, side="right") - 1


def test_an_epoch_holds_each_corpus_by_its_weight():
    """Shares w_k n_k / sum_j w_j n_j: exact counts 1000, 1200, 25 (hand-computed), so the
    share of each corpus is within 1 / 2225 of the weights' (the tolerance of rounding)."""
    pairs = epoch_pairs(MIX, seed=3, epoch=0)
    counts = np.bincount(corpus_of(pairs), minlength=3)
    assert counts.tolist() == MIX.pairs_per_epoch() == [1000, 1200, 25]
    expected = np.array([1000 * 1.0, 300 * 4.0, 50 * 0.5]) / 2225
    assert np.abs(counts / counts.sum() - expected).max() <= 1 / 2225
    copies = np.bincount(pairs, minlength=BOUNDS[-1])
    assert (copies[:1000] == 1).all() and (copies[1000:1300] == 4).all()
    assert sorted(np.flatnonzero(copies[1300:])) == sorted(set(np.flatnonzero(copies[1300:])))
    assert copies[1300:].max() == 1  # a fractional draw is without replacement


def test_fractional_weights_draw_other_pairs_each_epoch_and_the_order_is_seeded():
    draws = [
        set(p[p >= 1300].tolist()) for p in (epoch_pairs(MIX, seed=3, epoch=e) for e in range(200))
    ]
    assert len({frozenset(d) for d in draws}) > 150  # a new half most epochs
    seen = np.bincount([i - 1300 for d in draws for i in d], minlength=50) / 200
    assert np.abs(seen - 0.5).max() < 0.15  # each pair in about half of the epochs
    again = epoch_pairs(MIX, seed=3, epoch=7)
    np.testing.assert_array_equal(again, epoch_pairs(MIX, seed=3, epoch=7))
    assert not np.array_equal(again, epoch_pairs(MIX, seed=4, epoch=7))
    assert not np.array_equal(again, epoch_pairs(MIX, seed=3, epoch=8))


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    weights=st.lists(st.floats(0.01, 6.0), min_size=4, max_size=4),
    epoch=st.integers(0, 1000),
)
def test_every_epoch_draws_floor_w_copies_plus_the_rounded_rest(sizes, weights, epoch):
    mix = CorpusMix(sizes=tuple(sizes), weights=tuple(weights[: len(sizes)]))
    pairs = epoch_pairs(mix, seed=1, epoch=epoch)
    bounds = np.cumsum((0, *sizes))
    counts = np.bincount(np.searchsorted(bounds, pairs, side="right") - 1, minlength=len(sizes))
    assert counts[: len(sizes)].tolist() == [
        int(w // 1) * n + round((w % 1) * n) for n, w in zip(mix.sizes, mix.weights)
    ]


def test_weighted_batches_hold_the_epochs_pairs_within_the_budget_copies_spread():
    rng = np.random.default_rng(0)
    src = rng.integers(1, 30, size=BOUNDS[-1])
    tgt = rng.integers(1, 30, size=BOUNDS[-1])
    batches = weighted_batches(src, tgt, MIX, max_tokens=256, seed=3, epoch=2)
    drawn = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(drawn), np.sort(epoch_pairs(MIX, seed=3, epoch=2)))
    for batch in batches:
        assert len(batch) * (np.maximum(src[batch], tgt[batch]).max() + 1) <= 256
    # The four copies of a weight-4 pair are not packed side by side into one batch.
    batch_of = {}
    for b, batch in enumerate(batches):
        for i in batch[(batch >= 1000) & (batch < 1300)].tolist():
            batch_of.setdefault(i, set()).add(b)
    assert sum(len(b) == 1 for b in batch_of.values()) < 0.1 * len(batch_of)
