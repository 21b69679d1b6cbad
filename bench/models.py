"""The model sizes every system shares, nmt's models of those sizes, and their matmul FLOPs.

Sizes: `base` (d512, 8 heads, 6+6 layers, ffn 2048) and `small` (nmt's preset: d256, 4 heads,
3+3, ffn 1024); joint vocabulary, shared and tied embeddings, ReLU, random weights. The peers
build the same sizes from these dicts (marian_peer.MarianPeer.build).
"""

from __future__ import annotations

import torch
from torch import nn

from nmt.config import MODEL_PRESETS, ModelConfig
from nmt.data.tokenizer import PAD_ID
from nmt.model.transformer import Transformer

_SIZE_KEYS = ("d_model", "heads", "encoder_layers", "decoder_layers", "ffn_dim")
SIZES = {
    "base": dict(d_model=512, heads=8, encoder_layers=6, decoder_layers=6, ffn_dim=2048),
    "small": {k: MODEL_PRESETS["small"][k] for k in _SIZE_KEYS},
}


def build_nmt(
    size: str, *, vocab_size: int, seed: int, dropout: float = 0.1, **dims: int
) -> Transformer:
    """nmt's Transformer of `size` with random weights (seeded); `dims` override some of the
    size's dimensions (e.g. d_model=16 for profile_decode.py's floor model)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**SIZES[size], **dims}, dropout=dropout)
    return Transformer(cfg, src_vocab_size=vocab_size, tgt_vocab_size=vocab_size, pad_id=PAD_ID)


def matmul_parameters(model: Transformer) -> dict[str, int]:
    """Weights used in matrix multiplications, split by the tokens they multiply.

    src: encoder linears + the decoder's cross-attention key/value projections (applied to
    the encoder output); tgt: the other decoder linears + the output projection (V x D, the
    tied embedding). Embedding lookups, norms and biases do no matmul.
    """
    encoder = sum(_linear_weights(layer) for layer in model.encoder_layers)
    cross_kv = sum(layer.cross_attn.kv.weight.numel() for layer in model.decoder_layers)
    decoder = sum(_linear_weights(layer) for layer in model.decoder_layers) - cross_kv
    return {"src": encoder + cross_kv, "tgt": decoder + model.output.weight.numel()}


def _linear_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def training_flops(matmul: dict[str, int], *, src_tokens: int, tgt_tokens: int) -> float:
    """Model FLOPs of forward + backward: 6 * (N_src * src tokens + N_tgt * tgt tokens).

    The 6 N per token rule (2 forward, 4 backward) of Kaplan et al. 2020, with each weight
    counted for the tokens it sees; attention scores are left out, as is usual for MFU.
    """
    return 6.0 * (matmul["src"] * src_tokens + matmul["tgt"] * tgt_tokens)
