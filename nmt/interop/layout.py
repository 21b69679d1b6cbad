"""Where each nmt tensor lives in a transformers Marian / Pegasus model, in one table.

The table says, per tensor of an nmt layer, the transformers module(s) it becomes and how its
model-width axes are laid out; `to_transformers` walks it one way and `from_transformers` the
other way (for an import of such a directory), so the two can never disagree.

Two conventions differ, both handled here and nowhere else:
  * Fused projections: nmt's self-attention has one QKV matrix [3D, D] and its
    cross-attention one KV matrix [2D, D]; transformers has q_proj, k_proj, v_proj of [D, D]
    each. Split along the output axis, in that order (see nmt.model.attention).
  * Position tables: nmt interleaves PE[pos, 2i] = sin, PE[pos, 2i+1] = cos (Vaswani et al.);
    Marian and Pegasus put the sines in the first half and the cosines in the second, with
    the same frequencies 1 / 10000^(2i/D), and recompute the table on load (it is a function
    of D, not a weight one can set). Instead of a different table, the model width itself is
    permuted: HF dimension j is nmt dimension PERM[j], PERM = [0, 2, 4, ..., 1, 3, 5, ...].
    Every tensor axis that indexes the residual stream (embedding columns, inputs of the
    linears that read it, outputs of the linears that write it, LayerNorm gains and biases)
    is permuted the same way; LayerNorm, attention and the feed-forward block commute with
    a permutation of their width, so the permuted model computes exactly the same function
    (up to float summation order) and its positions are the transformers table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# How a tensor's model-width axes are laid out:
READS = "reads"  # a linear reading the residual stream: weight [out, D] (columns permuted)
WRITES = "writes"  # a linear writing it: weight [D, in] and bias [D] (rows permuted)
NORM = "norm"  # a LayerNorm over it: weight and bias [D]


@dataclass(frozen=True)
class Entry:
    """One nmt module and the transformers module(s) it splits into, in order."""

    nmt: str
    hf: tuple[str, ...]
    axes: str  # READS, WRITES or NORM


_SELF_ATTENTION = (
    Entry("self_attn.qkv", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), READS),
    Entry("self_attn.out", ("self_attn.out_proj",), WRITES),
    Entry("self_attn_residual.norm", ("self_attn_layer_norm",), NORM),
)
_FEED_FORWARD = (
    Entry("ffn.fc1", ("fc1",), READS),
    Entry("ffn.fc2", ("fc2",), WRITES),
    Entry("ffn_residual.norm", ("final_layer_norm",), NORM),
)
ENCODER_LAYER = _SELF_ATTENTION + _FEED_FORWARD
DECODER_LAYER = (
    _SELF_ATTENTION
    + (
        Entry("cross_attn.q", ("encoder_attn.q_proj",), READS),
        Entry("cross_attn.kv", ("encoder_attn.k_proj", "encoder_attn.v_proj"), READS),
        Entry("cross_attn.out", ("encoder_attn.out_proj",), WRITES),
        Entry("cross_attn_residual.norm", ("encoder_attn_layer_norm",), NORM),
    )
    + _FEED_FORWARD
)
# Pre-norm only: the LayerNorm closing each stack.
FINAL_NORMS = (
    Entry("encoder_norm", ("model.encoder.layer_norm",), NORM),
    Entry("decoder_norm", ("model.decoder.layer_norm",), NORM),
)
# Embeddings [V, D] and the output projection [V, D]: model width on axis 1.
EMBEDDINGS = {
    "src_embed.tokens.weight": "model.encoder.embed_tokens.weight",
    "tgt_embed.tokens.weight": "model.decoder.embed_tokens.weight",
    "output.weight": "lm_head.weight",
}


def width_permutation(d_model: int) -> Tensor:
    """PERM [D]: HF dimension j holds nmt dimension PERM[j] (sines first, then cosines)."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


def entries(cfg):
    """Every (Entry, nmt prefix, HF prefix) of a model of `cfg`'s (ModelConfig) sizes."""
    for i in range(cfg.encoder_layers):
        for e in ENCODER_LAYER:
            yield e, f"encoder_layers.{i}.", f"model.encoder.layers.{i}."
    for i in range(cfg.decoder_layers):
        for e in DECODER_LAYER:
            yield e, f"decoder_layers.{i}.", f"model.decoder.layers.{i}."
    if cfg.norm == "pre":
        for e in FINAL_NORMS:
            yield e, "", ""


def _permute(tensor: Tensor, axes: str, param: str, perm: Tensor) -> Tensor:
    """Apply `perm` to the model-width axis of `tensor` (param: "weight" or "bias")."""
    if axes == READS:
        return tensor.index_select(1, perm) if param == "weight" else tensor
    return tensor.index_select(0, perm)  # WRITES and NORM


def to_transformers(state: dict[str, Tensor], *, cfg) -> dict[str, Tensor]:
    """An nmt state dict -> transformers names and layout (cfg: nmt's ModelConfig)."""
    perm = width_permutation(cfg.d_model)
    out: dict[str, Tensor] = {}
    for e, nmt_prefix, hf_prefix in entries(cfg):
        for param in ("weight", "bias"):
            tensor = _permute(state[f"{nmt_prefix}{e.nmt}.{param}"], e.axes, param, perm)
            for name, part in zip(e.hf, tensor.chunk(len(e.hf), dim=0)):
                out[f"{hf_prefix}{name}.{param}"] = part.contiguous()
    for nmt_name, hf_name in EMBEDDINGS.items():
        out[hf_name] = state[nmt_name].index_select(1, perm).contiguous()
    return out


def from_transformers(state: dict[str, Tensor], *, cfg) -> dict[str, Tensor]:
    """The reverse of `to_transformers`: transformers names and layout -> an nmt state dict."""
    inverse = torch.argsort(width_permutation(cfg.d_model))
    out: dict[str, Tensor] = {}
    for e, nmt_prefix, hf_prefix in entries(cfg):
        for param in ("weight", "bias"):
            parts = [state[f"{hf_prefix}{name}.{param}"] for name in e.hf]
            tensor = _permute(torch.cat(parts, dim=0), e.axes, param, inverse)
            out[f"{nmt_prefix}{e.nmt}.{param}"] = tensor.contiguous()
    for nmt_name, hf_name in EMBEDDINGS.items():
        out[nmt_name] = state[hf_name].index_select(1, inverse).contiguous()
    return out
