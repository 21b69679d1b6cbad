"""Packed float32 linears (oneDNN weight layout) compute what nn.Linear computes: same logits
to float rounding, same beams, and `nmt translate` on the CPU uses them."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nmt.checkpoint import load_trained_model
from nmt.data.text import read_lines
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.decoding import packing
from nmt.decoding.engine import Engine
from nmt.decoding.options import DecodeOptions
from nmt.decoding.packing import PackedLinear, pack_linears
from nmt.decoding.search import SearchSettings, beam_search
from nmt.model.layers import FeedForward

pytestmark = pytest.mark.skipif(
    not packing.packing_available(), reason="torch built without oneDNN"
)

IDS = dict(bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID)


@pytest.fixture(scope="module")
def models(tiny_run):
    """(float32 model, its packed copy), from the tiny trained checkpoint."""
    model, tokenizer, _ = load_trained_model(tiny_run.checkpoint)
    return model, pack_linears(copy.deepcopy(model)), tokenizer


@pytest.fixture(scope="module")
def src_ids(tiny_run, models) -> torch.Tensor:
    lines = read_lines(tiny_run.raw("test_2016_flickr", "de"))[:12]
    ids = [s + [EOS_ID] for s in models[2].encode_src(lines)]
    width = max(map(len, ids))
    return torch.tensor([s + [PAD_ID] * (width - len(s)) for s in ids])


def test_every_linear_is_packed_and_relu_is_fused(models):
    model, packed, _ = models
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert not any(isinstance(m, nn.Linear) for m in packed.modules())
    assert sum(isinstance(m, PackedLinear) for m in packed.modules()) == linears
    ffns = [m for m in packed.modules() if isinstance(m, FeedForward)]
    assert ffns and all(f.fc1.attr == "relu" for f in ffns)
    assert all(isinstance(f.activation, nn.Identity) for f in ffns)
    assert all(f.fc2.attr == "none" for f in ffns)


def test_packed_logits_equal_unpacked(models, src_ids):
    model, packed, _ = models
    tgt_in = torch.cat([torch.full((len(src_ids), 1), BOS_ID), src_ids[:, :-1]], dim=1)
    with torch.inference_mode():
        expected, got = model(src_ids, tgt_in), packed(src_ids, tgt_in)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_packed_beam_search_finds_the_same_hypotheses(models, src_ids):
    model, packed, _ = models
    settings = SearchSettings(beam_size=4, n_best=2)
    expected = beam_search(model, src_ids, settings, **IDS)
    got = beam_search(packed, src_ids, settings, **IDS)
    for mine, theirs in zip(got, expected, strict=True):
        assert [h.tokens for h in mine] == [h.tokens for h in theirs]
        for a, b in zip(mine, theirs):
            assert a.score == pytest.approx(b.score, abs=1e-4)


def test_cpu_translator_packs_and_int8_does_not(tiny_run):
    fp32 = Engine.from_checkpoint(tiny_run.checkpoint).model
    int8 = Engine.from_checkpoint(tiny_run.checkpoint, DecodeOptions(quantize="int8")).model
    assert any(isinstance(m, PackedLinear) for m in fp32.modules())
    assert not any(isinstance(m, PackedLinear) for m in int8.modules())


def test_without_onednn_the_model_is_unchanged(monkeypatch):
    monkeypatch.setattr(packing, "packing_available", lambda: False)
    model = nn.Sequential(nn.Linear(4, 4))
    assert pack_linears(model) is model
    assert type(model[0]) is nn.Linear
