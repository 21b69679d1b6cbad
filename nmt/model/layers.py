"""Feed-forward block, encoder layer and decoder layer.

Each sublayer f sits in a residual connection, in one of two placements:
    pre-norm (default):  x + dropout(f(LayerNorm(x)))   stable without warmup tricks; the
                         stack then ends with one final LayerNorm (in `transformer.py`)
    post-norm (paper):   LayerNorm(x + dropout(f(x)))   Vaswani et al. 2017
Shape legend: see `nmt.model`.
"""

from __future__ import annotations

from torch import Tensor, nn

from nmt.config import ModelConfig
from nmt.model.attention import CrossAttention, SelfAttention
from nmt.model.cache import DecoderCache
from nmt.model.dropout import Dropout

# swish (SiLU, x * sigmoid(x)) is what Marian / OPUS-MT models use (`nmt import huggingface`).
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU}


class FeedForward(nn.Module):
    """x [..., D] -> fc2(dropout(activation(fc1(x)))), [..., D]; fc1 widens to ffn_dim."""

    def __init__(
        self, *, d_model: int, ffn_dim: int, activation: str, activation_dropout: float
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.activation = _ACTIVATIONS[activation]()
        self.dropout = Dropout(activation_dropout)
        self.fc2 = nn.Linear(ffn_dim, d_model)

    def forward(self, x: Tensor) -> Tensor:
        h = self.activation(self.fc1(x))
        # In eval mode dropout is the identity; skipping the module call saves decoding time.
        return self.fc2(self.dropout(h) if self.training else h)


class Residual(nn.Module):
    """The norm, dropout and placement around one sublayer: y = f(residual.inputs(x)),
    then residual.add(x, y)."""

    def __init__(self, *, d_model: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)
        self.pre_norm = pre_norm

    def inputs(self, x: Tensor) -> Tensor:
        return self.norm(x) if self.pre_norm else x

    def add(self, x: Tensor, y: Tensor) -> Tensor:
        x = x + (self.dropout(y) if self.training else y)  # see FeedForward.forward
        return x if self.pre_norm else self.norm(x)


def _feed_forward(cfg: ModelConfig) -> FeedForward:
    return FeedForward(
        d_model=cfg.d_model,
        ffn_dim=cfg.ffn_dim,
        activation=cfg.activation,
        activation_dropout=cfg.activation_dropout,
    )


def _residual(cfg: ModelConfig) -> Residual:
    return Residual(d_model=cfg.d_model, dropout=cfg.dropout, pre_norm=cfg.norm == "pre")


class EncoderLayer(nn.Module):
    """Self-attention over the source, then feed-forward."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        attn = dict(d_model=cfg.d_model, heads=cfg.heads, dropout=cfg.attention_dropout)
        self.self_attn = SelfAttention(**attn)
        self.self_attn_residual = _residual(cfg)
        self.ffn = _feed_forward(cfg)
        self.ffn_residual = _residual(cfg)

    def forward(self, x: Tensor, *, mask: Tensor) -> Tensor:
        """x [B, S, D], mask [B, 1, 1, S] from `attention.attention_mask` -> [B, S, D]."""
        res = self.self_attn_residual
        x = res.add(x, self.self_attn(res.inputs(x), mask=mask))
        return self.ffn_residual.add(x, self.ffn(self.ffn_residual.inputs(x)))


class DecoderLayer(nn.Module):
    """Causal self-attention, attention to the encoder memory, then feed-forward."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        attn = dict(d_model=cfg.d_model, heads=cfg.heads, dropout=cfg.attention_dropout)
        self.self_attn = SelfAttention(**attn)
        self.self_attn_residual = _residual(cfg)
        self.cross_attn = CrossAttention(**attn)
        self.cross_attn_residual = _residual(cfg)
        self.ffn = _feed_forward(cfg)
        self.ffn_residual = _residual(cfg)

    def forward(self, x: Tensor, *, memory_kv: Tensor, memory_mask: Tensor) -> Tensor:
        """The full target (teacher forcing): x [B, T, D] -> [B, T, D].

        memory_kv [2, B, H, S, Dh] from `cross_attn.project_memory`, memory_mask [B, 1, 1, S].
        """
        res = self.self_attn_residual
        x = res.add(x, self.self_attn(res.inputs(x), causal=True))
        res = self.cross_attn_residual
        x = res.add(x, self.cross_attn(res.inputs(x), memory_kv, mask=memory_mask))
        return self._feed_forward(x)

    def step(self, x: Tensor, *, cache: DecoderCache, layer: int) -> Tensor:
        """One position for N rows: x [N, 1, D] -> [N, 1, D]; writes this layer's key/value."""
        res = self.self_attn_residual
        x = res.add(x, self.self_attn.step(res.inputs(x), cache=cache, layer=layer))
        res = self.cross_attn_residual
        x = res.add(x, self.cross_attn.step(res.inputs(x), cache=cache, layer=layer))
        return self._feed_forward(x)

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.ffn_residual.add(x, self.ffn(self.ffn_residual.inputs(x)))
