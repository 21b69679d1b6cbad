"""Per-layer key/value cache for incremental decoding, with `reorder` for beam search.

Shape legend: see `nmt.model`; b source sentences, k rows (hypotheses) per sentence, N = b*k.
Each kind of state lives in one preallocated tensor for all layers, so that a reorder is a
single gather whatever the depth:

    self_kv    [L, 2, N, H, max_len, Dh]  decoder self-attention; positions < length are valid
    cross_kv   [L, 2, b, H, S, Dh]        the encoder memory projected once per sentence
    cross_mask [b, 1, 1, S]               the source padding as an SDPA mask (attention.py)

(index 0 of the second axis holds keys, index 1 values.) Rows are sentence major: rows
i*k .. i*k + k-1 belong to sentence i. The k beams of a sentence share its memory, so the
cross-attention state is stored once per sentence and the beams attend to it as k queries
(`cross_queries`): reordering beams never copies it. It is gathered only when sentences
leave the batch, where beam search prunes finished ones.

Writing a step is one copy into a slot that already exists, and reading is a slice: no
concatenation, and `length` is a Python int, so nothing in a step waits for the device.
The self-attention state is reordered at every beam step. On the CPU, when few rows move
(the usual case, see `_keep_alive` in search.py) only those are copied, in place; otherwise
the state is gathered into the other of two buffers allocated once, so a step allocates
nothing large (a fresh buffer per step costs page faults on the CPU, and an allocator round
trip everywhere).
"""

from __future__ import annotations

import torch
from torch import Tensor


class DecoderCache:
    """Keys/values of every decoder layer for N = b*k rows being decoded in lockstep."""

    def __init__(self, *, cross_kv: Tensor, cross_mask: Tensor, max_len: int) -> None:
        """cross_kv [L, 2, b, H, S, Dh], cross_mask [b, 1, 1, S]; one row per sentence (k = 1)
        and room for max_len positions.

        The self-attention buffer takes the dtype of `cross_kv`: both come out of linear
        layers under the same autocast state, so a bf16 run gets a bf16 cache.
        """
        self.cross_kv = cross_kv
        self.cross_mask = cross_mask
        self.rows_per_sentence = 1
        self.max_len = max_len
        self._buffers = [self._allocate(cross_kv.shape[2])]
        self.self_kv = self._buffers[0]
        self.length = 0  # positions decoded so far (the position the next step writes)

    @property
    def num_rows(self) -> int:
        return self.self_kv.shape[2]

    def append_self(self, layer: int, kv: Tensor) -> tuple[Tensor, Tensor]:
        """Write `layer`'s key/value [2, N, H, Dh] at position `length`.

        Returns that layer's keys and values up to and including it, [N, H, length + 1, Dh]
        each (views into the buffer). `advance` moves to the next position once every layer
        has written.
        """
        position = self.length
        if position >= self.max_len:
            raise IndexError(f"DecoderCache is full: max_len={self.max_len} positions decoded")
        buffer = self.self_kv[layer]
        buffer[:, :, :, position] = kv
        return buffer[0, :, :, : position + 1], buffer[1, :, :, : position + 1]

    def cross(self, layer: int) -> Tensor:
        """`layer`'s memory keys and values, one entry per sentence: [2, b, H, S, Dh]."""
        return self.cross_kv[layer]

    def advance(self) -> None:
        self.length += 1

    def reorder(self, index: Tensor, *, sentences: Tensor | None = None) -> None:
        """Keep rows `index` (LongTensor [N'], on the cache's device), in this order.

        N' may be smaller than N (finished sentences pruned) or larger (rows repeated, e.g.
        `arange(N).repeat_interleave(K)` to expand each sentence into K beams). The result
        must stay sentence major: with b' sentences, new row i belongs to the (i // k')-th
        of them, k' = N' / b'.

        `sentences` [b'] lists which of the current b sentences remain, in their new order
        (the memory state is gathered to them); None means all of them, unchanged (b' = b),
        and the memory state is not touched: beam steps pass None. Reordering arbitrary rows
        of a k = 1 cache is `reorder(index, sentences=index)`.
        """
        kept = self.cross_kv.shape[2] if sentences is None else len(sentences)
        if kept == 0 or len(index) % kept:
            raise ValueError(f"{len(index)} rows cannot be split evenly over {kept} sentences")
        self._reorder_self(index)
        if sentences is not None:
            self.cross_kv = self.cross_kv.index_select(2, sentences)
            self.cross_mask = self.cross_mask.index_select(0, sentences)
        self.rows_per_sentence = len(index) // kept

    def _reorder_self(self, index: Tensor) -> None:
        """New row i = old row index[i], for the decoded positions of every layer."""
        if self.length and self._reorder_in_place(index):
            return
        rows = index.numel()
        spare = self._spare(rows)
        filled = self.length
        if filled:
            # The gather writes straight into the spare buffer's strided prefix: one kernel.
            source = self.self_kv[:, :, :, :, :filled]
            torch.index_select(source, 2, index, out=spare[:, :, :, :, :filled])
        self.self_kv = spare

    def _reorder_in_place(self, index: Tensor) -> bool:
        """On the CPU, when under half of the rows change, copy only those rows, in place.

        Most beam steps keep most hypotheses in their row (beam search puts a row's best
        child in its parent's row): copying the few moved rows (gathered first, so a row
        read is never one already overwritten) costs a fraction of gathering them all.
        Finding them reads a value back, so on a GPU the one-kernel gather stays.
        Returns False when the gather must do it.
        """
        rows = index.numel()
        if index.device.type != "cpu" or rows != self.num_rows:
            return False
        moved = torch.nonzero(index != torch.arange(rows)).squeeze(1)
        if 2 * moved.numel() >= rows:
            return False
        if moved.numel():
            decoded = self.self_kv[:, :, :, :, : self.length]
            decoded.index_copy_(2, moved, decoded.index_select(2, index[moved]))
        return True

    def _spare(self, rows: int) -> Tensor:
        """A [L, 2, rows, H, max_len, Dh] view of the buffer not holding `self_kv`."""
        if len(self._buffers) == 1:
            self._buffers.append(self._allocate(max(rows, self._buffers[0].shape[2])))
        current = self._buffers[0].data_ptr() == self.self_kv.data_ptr()
        spare_at = 1 if current else 0
        if self._buffers[spare_at].shape[2] < rows:
            self._buffers[spare_at] = self._allocate(rows)
        return self._buffers[spare_at][:, :, :rows]

    def _allocate(self, rows: int) -> Tensor:
        layers, two, _, heads, _, head_dim = self.cross_kv.shape
        return self.cross_kv.new_empty(layers, two, rows, heads, self.max_len, head_dim)
