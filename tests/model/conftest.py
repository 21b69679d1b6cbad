"""Small random Transformers and batches shared by the model tests."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nmt.config import ModelConfig
from nmt.data.tokenizer import BOS_ID, PAD_ID
from nmt.model import Transformer

VOCAB = 50
TINY = ModelConfig(
    d_model=32, heads=2, encoder_layers=2, decoder_layers=2, ffn_dim=64, max_positions=64
)


def tiny_model(*, seed: int = 0, **overrides) -> Transformer:
    """A randomly initialised model in eval mode (dropout off); `overrides` edit TINY."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(TINY, **overrides)
    return Transformer(cfg, src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, pad_id=PAD_ID).eval()


def random_batch(
    *, src_lengths: list[int], tgt_len: int, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """src [B, max(src_lengths)] right-padded with PAD; tgt_in [B, tgt_len] starting with BOS.

    Token ids avoid the specials (0-3), so PAD only appears where placed on purpose.
    """
    gen = torch.Generator().manual_seed(seed)
    batch = len(src_lengths)
    src = torch.randint(4, VOCAB, (batch, max(src_lengths)), generator=gen)
    for row, length in enumerate(src_lengths):
        src[row, length:] = PAD_ID
    tgt = torch.randint(4, VOCAB, (batch, tgt_len), generator=gen)
    tgt[:, 0] = BOS_ID
    return src, tgt


@pytest.fixture
def model() -> Transformer:
    return tiny_model()


@pytest.fixture
def make_model():
    """tiny_model as a fixture: make_model(seed=..., norm="post", ...)."""
    return tiny_model


@pytest.fixture
def make_batch():
    """random_batch as a fixture: make_batch(src_lengths=[5, 3], tgt_len=4)."""
    return random_batch
