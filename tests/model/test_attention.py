"""Multi-head attention against attention written out by hand."""

from __future__ import annotations

import math

import torch

from nmt.model.attention import CrossAttention, SelfAttention, attention_mask
from nmt.model.cache import DecoderCache

D, H = 8, 2


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh), masked) v per head; q [B, T, D], k, v [B, S, D],
    allowed [B, T, S] -> [B, T, D] with heads concatenated."""
    outputs = []
    head_dim = D // H
    for h in range(H):
        part = slice(h * head_dim, (h + 1) * head_dim)
        scores = q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(head_dim)
        scores = scores.masked_fill(~allowed, float("-inf"))
        outputs.append(scores.softmax(-1) @ v[..., part])
    return torch.cat(outputs, dim=-1)


def test_attention_mask_is_true_where_keys_may_be_attended():
    pad = torch.tensor([[False, False, True], [False, False, False]])
    expected = torch.tensor([[[[True, True, False]]], [[[True, True, True]]]])
    assert torch.equal(attention_mask(pad), expected)


def test_additive_attention_mask_is_zero_or_minus_infinity():
    pad = torch.tensor([[False, True, True]])
    inf = float("-inf")
    got = attention_mask(pad, dtype=torch.bfloat16)
    assert got.dtype == torch.bfloat16
    assert got.float().tolist() == [[[[0.0, inf, inf]]]]


def test_bool_and_additive_masks_give_the_same_attention():
    torch.manual_seed(0)
    attn = CrossAttention(d_model=D, heads=H, dropout=0.0).eval()
    x, kv = torch.randn(2, 3, D), attn.project_memory(torch.randn(2, 4, D))
    pad = torch.tensor([[False] * 4, [False, False, True, True]])
    with_bool = attn(x, kv, mask=attention_mask(pad))
    additive = attn(x, kv, mask=attention_mask(pad, dtype=torch.float32))
    assert torch.allclose(with_bool, additive, atol=1e-6)


def test_self_attention_with_padding_matches_hand_computation():
    torch.manual_seed(0)
    attn = SelfAttention(d_model=D, heads=H, dropout=0.0).eval()
    x = torch.randn(2, 4, D)
    pad = torch.tensor([[False] * 4, [False, False, True, True]])
    wq, wk, wv = attn.qkv.weight.chunk(3)
    bq, bk, bv = attn.qkv.bias.chunk(3)
    allowed = (~pad)[:, None, :].expand(2, 4, 4)
    mixed = reference_attention(x @ wq.T + bq, x @ wk.T + bk, x @ wv.T + bv, allowed)
    expected = attn.out(mixed)
    assert torch.allclose(attn(x, mask=attention_mask(pad)), expected, atol=1e-6)


def test_causal_self_attention_matches_lower_triangular_mask():
    torch.manual_seed(0)
    attn = SelfAttention(d_model=D, heads=H, dropout=0.0).eval()
    x = torch.randn(2, 5, D)
    wq, wk, wv = attn.qkv.weight.chunk(3)
    bq, bk, bv = attn.qkv.bias.chunk(3)
    allowed = torch.ones(5, 5, dtype=torch.bool).tril().expand(2, 5, 5)
    expected = attn.out(reference_attention(x @ wq.T + bq, x @ wk.T + bk, x @ wv.T + bv, allowed))
    assert torch.allclose(attn(x, causal=True), expected, atol=1e-6)


def test_cross_attention_matches_hand_computation():
    torch.manual_seed(0)
    attn = CrossAttention(d_model=D, heads=H, dropout=0.0).eval()
    x, memory = torch.randn(2, 3, D), torch.randn(2, 4, D)
    pad = torch.tensor([[False] * 4, [False, True, True, True]])
    wk, wv = attn.kv.weight.chunk(2)
    bk, bv = attn.kv.bias.chunk(2)
    allowed = (~pad)[:, None, :].expand(2, 3, 4)
    mixed = reference_attention(attn.q(x), memory @ wk.T + bk, memory @ wv.T + bv, allowed)
    got = attn(x, attn.project_memory(memory), mask=attention_mask(pad))
    assert torch.allclose(got, attn.out(mixed), atol=1e-6)


def test_one_step_at_a_time_equals_causal_full_sequence():
    torch.manual_seed(0)
    attn = SelfAttention(d_model=D, heads=H, dropout=0.0).eval()
    x = torch.randn(3, 5, D)
    # A one-layer cache; the cross-attention part is unused by SelfAttention.
    cache = DecoderCache(
        cross_kv=torch.zeros(1, 2, 3, H, 1, D // H),
        cross_mask=torch.ones(3, 1, 1, 1, dtype=torch.bool),
        max_len=8,
    )
    steps = []
    for t in range(5):
        steps.append(attn.step(x[:, t : t + 1], cache=cache, layer=0))
        cache.advance()
    assert torch.allclose(torch.cat(steps, dim=1), attn(x, causal=True), atol=1e-6)


def test_fused_projections_are_initialised_block_by_block():
    """Each q/k/v block gets Xavier-uniform with gain 1/sqrt(2), as fairseq's unfused ones."""
    torch.manual_seed(0)
    d = 64
    self_attn = SelfAttention(d_model=d, heads=4, dropout=0.0)
    cross = CrossAttention(d_model=d, heads=4, dropout=0.0)
    bound = math.sqrt(6 / (2 * d)) / math.sqrt(2)
    blocks = [*self_attn.qkv.weight.chunk(3), cross.q.weight, *cross.kv.weight.chunk(2)]
    for block in blocks:
        assert block.abs().max() <= bound
        assert block.abs().max() > 0.9 * bound  # uses the whole range: not a smaller gain
    assert torch.count_nonzero(self_attn.qkv.bias) == 0


def test_few_query_attention_equals_sdpa_with_padding():
    """The explicit-product path of decoding steps on the CPU computes what SDPA computes."""
    from nmt.model.attention import _few_query_attention

    torch.manual_seed(0)
    q, k, v = torch.randn(3, 4, 5, 8), torch.randn(3, 4, 7, 8), torch.randn(3, 4, 7, 8)
    pad = torch.tensor([[False] * 7, [False] * 5 + [True] * 2, [False] + [True] * 6])
    mask = attention_mask(pad, dtype=torch.float32)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(_few_query_attention(q, k, v, mask=mask), expected)
    unmasked = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(_few_query_attention(q, k, v, mask=None), unmasked)
