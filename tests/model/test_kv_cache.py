"""DecoderCache: reordering rows mid-decode equals decoding those rows from scratch."""

from __future__ import annotations

import pytest
import torch

STEPS = 5


def decode(model, src: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Step-by-step log-probs [N, T, V] feeding tokens [N, T] (teacher forced)."""
    memory = model.encode(src)
    cache = model.init_cache(memory, max_len=tokens.shape[1])
    return torch.stack(
        [model.decode_step(tokens[:, t], memory, cache) for t in range(tokens.shape[1])], dim=1
    )


def decode_with_reorder(model, src, tokens, index: torch.Tensor, *, at: int) -> torch.Tensor:
    """Decode rows `src` for `at` steps, reorder(index), then continue with rows `index`
    of `tokens`; returns the log-probs after the reorder, [N', T - at, V]."""
    memory = model.encode(src)
    cache = model.init_cache(memory, max_len=tokens.shape[1])
    for t in range(at):
        model.decode_step(tokens[:, t], memory, cache)
    cache.reorder(index)
    memory = memory.index_select(index)
    tokens = tokens.index_select(0, index)
    out = [model.decode_step(tokens[:, t], memory, cache) for t in range(at, tokens.shape[1])]
    return torch.stack(out, dim=1)


@pytest.mark.parametrize(
    "index",
    [
        [2, 0],  # shrink: finished sentences pruned
        [3, 1, 2, 0],  # permute
        [0, 0, 1, 1, 2, 2, 3, 3],  # expand, as arange(N).repeat_interleave(K)
        [1, 1, 1, 3, 3, 3],  # shrink and expand at once
    ],
)
@pytest.mark.parametrize("at", [0, 2])  # before the first step, and mid-sentence
def test_reorder_then_continue_equals_decoding_the_rows_from_scratch(
    make_model, make_batch, index, at
):
    model = make_model()
    src, tokens = make_batch(src_lengths=[6, 3, 5, 2], tgt_len=STEPS)
    index = torch.tensor(index)
    with torch.no_grad():
        got = decode_with_reorder(model, src, tokens, index, at=at)
        expected = decode(model, src[index], tokens[index])[:, at:]
    assert torch.allclose(got, expected, atol=1e-5)


def test_reorder_keeps_length_and_room(make_model, make_batch):
    model = make_model()
    src, tokens = make_batch(src_lengths=[4, 2], tgt_len=3)
    with torch.no_grad():
        memory = model.encode(src)
        cache = model.init_cache(memory, max_len=7)
        for t in range(3):
            model.decode_step(tokens[:, t], memory, cache)
        cache.reorder(torch.tensor([1, 1, 0]))
    assert (cache.length, cache.max_len, cache.num_rows) == (3, 7, 3)
    assert cache.self_kv.shape == (2, 2, 3, 2, 7, 16)  # [L, 2, N, H, max_len, Dh]
    assert cache.cross_kv.shape == (2, 2, 3, 2, 4, 16)  # [L, 2, N, H, S, Dh]


def test_full_cache_is_an_error(make_model, make_batch):
    model = make_model()
    src, tokens = make_batch(src_lengths=[3], tgt_len=3)
    with torch.no_grad():
        memory = model.encode(src)
        cache = model.init_cache(memory, max_len=2)
        model.decode_step(tokens[:, 0], memory, cache)
        model.decode_step(tokens[:, 1], memory, cache)
        with pytest.raises(IndexError, match="full"):
            model.decode_step(tokens[:, 2], memory, cache)


def test_max_len_beyond_max_positions_is_rejected(make_model, make_batch):
    model = make_model()
    src, _ = make_batch(src_lengths=[3], tgt_len=1)
    with pytest.raises(ValueError, match="max_positions"):
        model.init_cache(model.encode(src), max_len=model.cfg.max_positions + 1)
