"""Encoder/decoder layers equal their formulas composed by hand, in both norm placements."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nmt.config import ModelConfig
from nmt.model.attention import attention_mask
from nmt.model.layers import DecoderLayer, EncoderLayer, FeedForward

CFG = ModelConfig(d_model=16, heads=2, ffn_dim=32, dropout=0.0)


def test_feed_forward_is_fc2_act_fc1():
    torch.manual_seed(0)
    ffn = FeedForward(d_model=4, ffn_dim=8, activation="relu", activation_dropout=0.0)
    x = torch.randn(3, 4)
    hidden = torch.clamp(x @ ffn.fc1.weight.T + ffn.fc1.bias, min=0)
    assert torch.allclose(ffn(x), hidden @ ffn.fc2.weight.T + ffn.fc2.bias, atol=1e-6)


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
