"""Sinusoidal positions and scaled token embeddings against the paper's formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nmt.model.embedding import TransformerEmbedding, sinusoidal_positions


def test_position_zero_is_sin0_cos0():
    table = sinusoidal_positions(4, 6)
    assert torch.equal(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))


def test_positions_follow_the_formula():
    """PE[pos, 2i] = sin(pos / 10000^(2i/D)), PE[pos, 2i+1] = cos(same), D = 8."""
    table = sinusoidal_positions(60, 8)
    for pos in (1, 3, 57):
        expected = []
        for i in range(4):
            angle = pos / 10000 ** (2 * i / 8)
            expected += [math.sin(angle), math.cos(angle)]
        assert torch.allclose(table[pos], torch.tensor(expected), atol=1e-6)
    # Spot values computed by hand: sin(3) and cos(3 / 10000^(6/8)) = cos(3e-3).
    assert table[3, 0].item() == pytest.approx(0.1411200080598672, abs=1e-7)
    assert table[3, 7].item() == pytest.approx(0.9999955000033750, abs=1e-7)


def test_odd_width_is_rejected():
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positions(4, 7)


def embedding(seed: int = 0) -> TransformerEmbedding:
    torch.manual_seed(seed)
    tokens = nn.Embedding(10, 8, padding_idx=0)
    return TransformerEmbedding(tokens, max_positions=16, dropout=0.0).eval()


def test_embedding_is_scaled_tokens_plus_positions():
    emb = embedding()
    ids = torch.tensor([[5, 7, 1]])
    expected = emb.tokens.weight[ids[0]] * math.sqrt(8) + sinusoidal_positions(3, 8)
    assert torch.allclose(emb(ids)[0], expected, atol=1e-6)


def test_offset_gives_a_step_the_position_it_has_in_the_full_sequence():
    emb = embedding()
    ids = torch.tensor([[5, 7, 1, 4], [2, 3, 9, 9]])
    full = emb(ids)
    for t in range(4):
        assert torch.equal(emb(ids[:, t : t + 1], offset=t)[:, 0], full[:, t])


def test_position_table_is_not_in_the_state_dict():
    assert list(embedding().state_dict()) == ["tokens.weight"]


def test_positions_beyond_the_table_are_an_error():
    with pytest.raises(ValueError, match="max_positions"):
        embedding()(torch.ones(1, 2, dtype=torch.long), offset=15)
