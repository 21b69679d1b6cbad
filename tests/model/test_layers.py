"""Encoder/decoder layers equal their formulas composed by hand, in both norm placements."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nmt.config import ModelConfig
from nmt.model.attention import attention_mask
from nmt.model.dropout import Dropout
from nmt.model.layers import DecoderLayer, EncoderLayer, FeedForward, Residual

CFG = ModelConfig(d_model=16, heads=2, ffn_dim=32, dropout=0.0)


def test_feed_forward_is_fc2_act_fc1():
    torch.manual_seed(0)
    ffn = FeedForward(d_model=4, ffn_dim=8, activation="relu", activation_dropout=0.0)
    x = torch.randn(3, 4)
    hidden = torch.clamp(x @ ffn.fc1.weight.T + ffn.fc1.bias, min=0)
    assert torch.allclose(ffn(x), hidden @ ffn.fc2.weight.T + ffn.fc2.bias, atol=1e-6)


def test_dropout_applies_in_training_only():
    """Eval mode skips the dropout calls (decoding speed); training must still drop."""
    torch.manual_seed(0)
    ffn = FeedForward(d_model=4, ffn_dim=64, activation="relu", activation_dropout=0.5)
    residual = Residual(d_model=4, dropout=0.5, pre_norm=True)
    x, y = torch.randn(8, 4), torch.randn(8, 4)
    hidden = torch.relu(ffn.fc1(x))
    torch.manual_seed(1)
    want_ffn = ffn.fc2(Dropout(0.5)(hidden))
    want_add = x + Dropout(0.5)(y)
    torch.manual_seed(1)
    assert torch.equal(ffn.train()(x), want_ffn)
    assert torch.equal(residual.train().add(x, y), want_add)
    assert not torch.equal(want_add, x + y)  # something was dropped
    assert torch.equal(ffn.eval()(x), ffn.fc2(hidden))
    assert torch.equal(residual.eval().add(x, y), x + y)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_encoder_layer_composition(norm):
    torch.manual_seed(0)
    layer = EncoderLayer(dataclasses.replace(CFG, norm=norm)).eval()
    x = torch.randn(2, 5, 16)
    mask = attention_mask(torch.tensor([[False] * 5, [False, False, False, True, True]]))
    ln1, ln2 = layer.self_attn_residual.norm, layer.ffn_residual.norm
    if norm == "pre":  # x + f(LN(x))
        h = x + layer.self_attn(ln1(x), mask=mask)
        expected = h + layer.ffn(ln2(h))
    else:  # LN(x + f(x))
        h = ln1(x + layer.self_attn(x, mask=mask))
        expected = ln2(h + layer.ffn(h))
    assert torch.allclose(layer(x, mask=mask), expected, atol=1e-6)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_decoder_layer_composition(norm):
    torch.manual_seed(0)
    layer = DecoderLayer(dataclasses.replace(CFG, norm=norm)).eval()
    x, memory = torch.randn(2, 4, 16), torch.randn(2, 3, 16)
    mask = attention_mask(torch.tensor([[False] * 3, [False, True, True]]))
    kv = layer.cross_attn.project_memory(memory)
    ln1 = layer.self_attn_residual.norm
    ln2 = layer.cross_attn_residual.norm
    ln3 = layer.ffn_residual.norm
    if norm == "pre":
        h = x + layer.self_attn(ln1(x), causal=True)
        h = h + layer.cross_attn(ln2(h), kv, mask=mask)
        expected = h + layer.ffn(ln3(h))
    else:
        h = ln1(x + layer.self_attn(x, causal=True))
        h = ln2(h + layer.cross_attn(h, kv, mask=mask))
        expected = ln3(h + layer.ffn(h))
    assert torch.allclose(layer(x, memory_kv=kv, memory_mask=mask), expected, atol=1e-6)
