"""Token embeddings scaled by sqrt(D) plus sinusoidal positions (Vaswani et al. 2017, 3.5).

    PE[pos, 2i]     = sin(pos / 10000^(2i / D))
    PE[pos, 2i + 1] = cos(pos / 10000^(2i / D))

Positions count from 0. The table is precomputed up to `max_positions` and kept out of the
state dict (it is a function of D alone). Two options exist for imported models (nmt import
huggingface, M2M100 / NLLB): `positions="fairseq"`, fairseq's frequencies
1 / 10000^(i / (D/2 - 1)) in the same interleaved layout, and `position_offset`, the position
the first token takes (fairseq counts from padding_idx + 1 = 2). Incremental decoding passes
`offset` = the number of positions already decoded, so a step's single token gets the same
vector it would get in the full sequence.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from nmt.model.dropout import Dropout


def sinusoidal_positions(
    num_positions: int, d_model: int, *, style: str = "vaswani", offset: int = 0
) -> Tensor:
    """The position table PE, float32 [num_positions, D] (D even): row p holds position
    p + offset; `style` vaswani (frequencies 1 / 10000^(2i/D)) or fairseq
    (1 / 10000^(i/(D/2-1)))."""
    if d_model % 2:
        raise ValueError(f"sinusoidal positions need an even d_model, got {d_model}")
    position = torch.arange(offset, offset + num_positions, dtype=torch.float64)[:, None]
    # The frequencies in float64, so that large positions keep their precision.
    half = torch.arange(0, d_model // 2, dtype=torch.float64)
    if style == "fairseq":
        inv_freq = 1e4 ** (-half / max(d_model // 2 - 1, 1))
    else:
        inv_freq = 1e4 ** (-2 * half / d_model)
    table = torch.empty(num_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table.float()


class TransformerEmbedding(nn.Module):
    """ids [B, T] -> dropout(tokens(ids) * sqrt(D) + PE[offset : offset + T]), [B, T, D].

    `tokens` is passed in so that the encoder, the decoder and the output projection can
    share one matrix.
    """

    def __init__(
        self,
        tokens: nn.Embedding,
        *,
        max_positions: int,
        dropout: float,
        positions: str = "vaswani",
        position_offset: int = 0,
    ) -> None:
        super().__init__()
        self.tokens = tokens
        self.scale = math.sqrt(tokens.embedding_dim)
        self.dropout = Dropout(dropout)
        table = sinusoidal_positions(
            max_positions, tokens.embedding_dim, style=positions, offset=position_offset
        )
        self.register_buffer("positions", table, persistent=False)

    def forward(self, ids: Tensor, *, offset: int = 0) -> Tensor:
        length = ids.shape[1]
        if offset + length > self.positions.shape[0]:
            raise ValueError(
                f"position {offset + length - 1} is beyond max_positions "
                f"({self.positions.shape[0]})"
            )
        x = self.tokens(ids) * self.scale + self.positions[offset : offset + length]
        return self.dropout(x)
