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


def decode_with_reorder(
    model, src, tokens, index: torch.Tensor, *, at: int, sentences: torch.Tensor | None
) -> torch.Tensor:
    """Decode rows `src` for `at` steps, reorder(index, sentences=...), then continue with
    rows `index` of `tokens`; returns the log-probs after the reorder, [N', T - at, V]."""
    memory = model.encode(src)
    cache = model.init_cache(memory, max_len=tokens.shape[1])
    for t in range(at):
        model.decode_step(tokens[:, t], memory, cache)
    cache.reorder(index, sentences=sentences)
    memory = memory.index_select(index)
    tokens = tokens.index_select(0, index)
    out = [model.decode_step(tokens[:, t], memory, cache) for t in range(at, tokens.shape[1])]
    return torch.stack(out, dim=1)


@pytest.mark.parametrize(
    ("index", "sentences"),
    [
        ([2, 0], [2, 0]),  # shrink: finished sentences pruned
        ([3, 1, 2, 0], [3, 1, 2, 0]),  # permute
        ([0, 0, 1, 1, 2, 2, 3, 3], None),  # expand into beams: the memory is not copied
        ([1, 1, 1, 3, 3, 3], [1, 3]),  # shrink and expand at once
    ],
)
@pytest.mark.parametrize("at", [0, 2])  # before the first step, and mid-sentence
def test_reorder_then_continue_equals_decoding_the_rows_from_scratch(
    make_model, make_batch, index, sentences, at
):
    model = make_model()
    src, tokens = make_batch(src_lengths=[6, 3, 5, 2], tgt_len=STEPS)
    index = torch.tensor(index)
    sentences = None if sentences is None else torch.tensor(sentences)
    with torch.no_grad():
        got = decode_with_reorder(model, src, tokens, index, at=at, sentences=sentences)
        expected = decode(model, src[index], tokens[index])[:, at:]
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("swap", [[1, 0, 2, 3, 4, 5, 6, 7], list(range(8))])
def test_reordering_a_few_beam_rows_in_place_equals_decoding_them_from_scratch(
    make_model, make_batch, swap
):
    """Under half of the rows move (one swap, or none): the CPU copies just those rows into
    the same buffer. Each swapped row is the other's source, so both must be read first."""
    model = make_model()
    src, tokens = make_batch(src_lengths=[6, 3, 5, 2], tgt_len=STEPS)
    beams = torch.arange(4).repeat_interleave(2)  # 2 beams per sentence, sentence major
    beam_tokens = torch.stack([tokens, tokens.roll(1, dims=0)], dim=1).reshape(8, STEPS)
    swap = torch.tensor(swap)
    with torch.no_grad():
        memory = model.encode(src)
        cache = model.init_cache(memory, max_len=STEPS)
        cache.reorder(beams)
        for t in range(2):
            model.decode_step(beam_tokens[:, t], memory, cache)
        storage = cache.self_kv.data_ptr()
        cache.reorder(swap)
        assert cache.self_kv.data_ptr() == storage  # in place, not the spare buffer
        moved = beam_tokens[swap]
        got = torch.stack([model.decode_step(moved[:, t], memory, cache) for t in (2, 3, 4)], 1)
        expected = decode(model, src[beams], moved)[:, 2:]
    assert torch.allclose(got, expected, atol=1e-5)


def test_reorder_keeps_length_and_room(make_model, make_batch):
    model = make_model()
    src, tokens = make_batch(src_lengths=[4, 2], tgt_len=3)
    with torch.no_grad():
        memory = model.encode(src)
        cache = model.init_cache(memory, max_len=7)
        for t in range(3):
            model.decode_step(tokens[:, t], memory, cache)
        cache.reorder(torch.tensor([1, 1, 0]), sentences=torch.tensor([1, 1, 0]))
    assert (cache.length, cache.max_len, cache.num_rows) == (3, 7, 3)
    assert cache.self_kv.shape == (2, 2, 3, 2, 7, 16)  # [L, 2, N, H, max_len, Dh]
    assert cache.cross_kv.shape == (2, 2, 3, 2, 4, 16)  # [L, 2, b, H, S, Dh]


def test_beams_share_their_sentence_memory(make_model, make_batch):
    """Expanding 2 sentences into 3 beams each leaves the memory state as it was (2 rows,
    the same storage), and reorders among beams never copy it; pruning a sentence does."""
    model = make_model()
    src, tokens = make_batch(src_lengths=[4, 2], tgt_len=3)
    with torch.no_grad():
        memory = model.encode(src)
        cache = model.init_cache(memory, max_len=7)
        cross = cache.cross_kv
        cache.reorder(torch.tensor([0, 0, 0, 1, 1, 1]))
        model.decode_step(tokens[[0, 0, 0, 1, 1, 1], 0], memory, cache)
        cache.reorder(torch.tensor([2, 0, 0, 3, 5, 4]))
        assert cache.cross_kv is cross and cache.rows_per_sentence == 3
        cache.reorder(torch.tensor([4, 4, 3]), sentences=torch.tensor([1]))
    assert cache.cross_kv.shape[2] == 1 and cache.num_rows == 3
    assert torch.equal(cache.cross_kv[:, :, 0], cross[:, :, 1])


def test_rows_must_split_evenly_over_the_sentences(make_model, make_batch):
    model = make_model()
    src, _ = make_batch(src_lengths=[4, 2], tgt_len=1)
    with torch.no_grad():
        cache = model.init_cache(model.encode(src), max_len=3)
    with pytest.raises(ValueError, match="evenly"):
        cache.reorder(torch.tensor([0, 0, 1]))


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
