"""Token ids as one flat array plus offsets, loaded by memory map.

A split/side is two `.npy` files: `<stem>.ids.npy` (all sentences' ids concatenated, uint16
when the vocabulary fits, else int32) and `<stem>.offsets.npy` (int64, n + 1 entries;
sentence i is ids[offsets[i]:offsets[i + 1]]). Only the offsets are read into memory, so
corpora larger than RAM train fine. Ids exclude BOS/EOS: batching adds them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from nmt.errors import DataError


def ids_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def write_token_array(stem: Path, sentences: Iterable[list[int]], *, vocab_size: int) -> int:
    """Write `stem.ids.npy` and `stem.offsets.npy` atomically; returns the number of tokens.

    Streams sentences into a temporary raw file so memory stays flat for large corpora.
    """
    stem = Path(stem)
    dtype = ids_dtype(vocab_size)
    raw_tmp = stem.with_name(stem.name + ".ids.raw.tmp")
    offsets = [0]
    with open(raw_tmp, "wb") as raw:
        for ids in sentences:
            arr = np.asarray(ids, dtype=dtype)
            raw.write(arr.tobytes())
            offsets.append(offsets[-1] + len(arr))
    total = offsets[-1]
    try:
        flat = np.fromfile(raw_tmp, dtype=dtype, count=total) if total else np.zeros(0, dtype)
        _save_npy_atomic(Path(f"{stem}.ids.npy"), flat)
        _save_npy_atomic(Path(f"{stem}.offsets.npy"), np.asarray(offsets, dtype=np.int64))
    finally:
        raw_tmp.unlink(missing_ok=True)
    return total


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class TokenArray:
    """Read-only view of a binarized split side: `len()`, `[i] -> np.ndarray`, `lengths`."""

    def __init__(self, stem: Path):
        stem = Path(stem)
        ids_path, offsets_path = Path(f"{stem}.ids.npy"), Path(f"{stem}.offsets.npy")
        for p in (ids_path, offsets_path):
            if not p.exists():
                raise DataError(f"prepared data file not found: {p} (run `nmt prepare` first)")
        try:
            self.ids = np.load(ids_path, mmap_mode="r")
            self.offsets = np.load(offsets_path)
        except (ValueError, OSError) as exc:
            raise DataError(f"corrupt prepared data file {stem}.*.npy: {exc}") from None
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[-1] != len(self.ids):
            raise DataError(f"corrupt prepared data: offsets do not match ids in {stem}.*.npy")
        self.lengths = np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.ids[self.offsets[i] : self.offsets[i + 1]], dtype=np.int64)

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])
