"""Per-layer key/value cache for incremental decoding, with `reorder(index)` for beam search.

Shape legend: see `nmt.model`. Each layer's keys and values live in one preallocated tensor
for all layers, so that `reorder` is a single gather whatever the depth:

    self_kv   [L, 2, N, H, max_len, Dh]   decoder self-attention; positions < length are valid
    cross_kv  [L, 2, N, H, S, Dh]         the encoder memory projected once per sentence
    cross_mask [N, 1, 1, S]               the source padding as an SDPA mask (attention.py)

(index 0 of the second axis holds keys, index 1 values.) Writing a step is one copy into a
slot that already exists, and reading is a slice: no concatenation, no reallocation, and
`length` is a Python int, so nothing in a step waits for the device.
"""

from __future__ import annotations

import torch
from torch import Tensor


class DecoderCache:
    """Keys/values of every decoder layer for N rows being decoded in lockstep."""

    def __init__(self, *, cross_kv: Tensor, cross_mask: Tensor, max_len: int) -> None:
        """cross_kv [L, 2, N, H, S, Dh], cross_mask [N, 1, 1, S]; room for max_len positions.

        The self-attention buffer takes the dtype of `cross_kv`: both come out of linear
        layers under the same autocast state, so a bf16 run gets a bf16 cache.
        """
        layers, two, rows, heads, _, head_dim = cross_kv.shape
        self.cross_kv = cross_kv
        self.cross_mask = cross_mask
        self.self_kv = cross_kv.new_empty(layers, two, rows, heads, max_len, head_dim)
        self._length = 0

    @property
    def length(self) -> int:
        """Number of positions decoded so far (the position the next step writes)."""
        return self._length

    @property
    def max_len(self) -> int:
        return self.self_kv.shape[4]

    @property
    def num_rows(self) -> int:
        return self.self_kv.shape[2]

    def append_self(self, layer: int, kv: Tensor) -> tuple[Tensor, Tensor]:
        """Write `layer`'s key/value [2, N, H, Dh] at position `length`.

        Returns that layer's keys and values up to and including it, [N, H, length + 1, Dh]
        each (views into the buffer). `advance` moves to the next position once every layer
        has written.
        """
        position = self._length
        if position >= self.max_len:
            raise IndexError(f"DecoderCache is full: max_len={self.max_len} positions decoded")
        buffer = self.self_kv[layer]
        buffer[:, :, :, position] = kv
        return buffer[0, :, :, : position + 1], buffer[1, :, :, : position + 1]

    def cross(self, layer: int) -> Tensor:
        """`layer`'s memory keys and values, [2, N, H, S, Dh]."""
        return self.cross_kv[layer]

    def advance(self) -> None:
        self._length += 1

    def reorder(self, index: Tensor) -> None:
        """Keep rows `index` (LongTensor [N'], on the cache's device), in this order.

        N' may be smaller than N (finished sentences pruned) or larger (rows repeated, e.g.
        `arange(N).repeat_interleave(K)` to expand each sentence into K beams). Only the
        positions decoded so far are copied.
        """
        filled = self._length
        old = self.self_kv
        new = old.new_empty(*old.shape[:2], index.numel(), *old.shape[3:])
        if filled:
            # The gather writes straight into the new buffer's strided prefix: one kernel.
            torch.index_select(old[:, :, :, :, :filled], 2, index, out=new[:, :, :, :, :filled])
        self.self_kv = new
        self.cross_kv = self.cross_kv.index_select(2, index)
        self.cross_mask = self.cross_mask.index_select(0, index)
