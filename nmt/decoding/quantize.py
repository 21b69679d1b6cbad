"""int8 inference on the CPU: dynamic quantization of every linear layer.

Weights are stored as int8 with one scale per output row (per channel, as CTranslate2's int8
does); activations are quantized per batch on the fly, and the products run through fbgemm's
int8 kernels (AVX2 / AVX-512 VNNI), about 3x the float32 matmul speed on this code's shapes.
Embeddings, LayerNorm and attention stay float32. The output projection, tied to the
embedding in training, gets its own int8 copy; the embedding lookup keeps float32 weights.

This uses `torch.ao.quantization.quantize_dynamic`, which PyTorch marks deprecated (in
favour of torchao) but still ships and runs in the pinned torch; its warning is silenced
here because the user cannot act on it. The quality cost is measured, not assumed:
`bench/int8_quality.py` compares BLEU with and without it on a trained model.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from nmt.errors import NmtError


def quantize(model: nn.Module, mode: str, *, device: torch.device) -> nn.Module:
    """`model` for inference in `mode` ("none": unchanged; "int8": see the module docstring),
    a `decode.quantize` value the config schema or the decoding options already checked."""
    if mode == "none":
        return model
    if device.type != "cpu":
        raise NmtError(
            f"int8 quantization runs on the CPU only (device {device}; --device cpu decodes "
            "there); on a GPU decode in bf16 instead (decode.precision, which auto picks there)"
        )
    return quantize_int8(model)


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` (in eval mode) whose nn.Linear layers are dynamic int8, per channel."""
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        quantized = torch.ao.quantization.quantize_dynamic(
            model.eval(), {nn.Linear: qconfig}, dtype=torch.qint8, inplace=False
        )
    return quantized
