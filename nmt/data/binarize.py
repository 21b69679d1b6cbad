"""Token ids as one flat array plus offsets, loaded by memory map.

A split/side is two `.npy` files: `<stem>.ids.npy` (all sentences' ids concatenated, uint16
when the vocabulary fits, else int32) and `<stem>.offsets.npy` (int64, n + 1 entries;
sentence i is ids[offsets[i]:offsets[i + 1]]). Only the offsets are read into memory, so
corpora larger than RAM train fine. Ids exclude BOS/EOS: batching adds them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from nmt.errors import DataError
from nmt.files import atomic_write


def ids_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


class TokenArrayWriter:
    """Append sentences one at a time; `close()` writes the arrays atomically.

    Ids stream into a temporary raw file so memory stays flat however large the corpus;
    only the offsets (8 bytes a sentence) are held in memory.
    """

    def __init__(self, stem: Path, *, vocab_size: int):
        self.stem = Path(stem)
        self.dtype = ids_dtype(vocab_size)
        self._raw_path = self.stem.with_name(self.stem.name + ".ids.raw.tmp")
        self._raw = open(self._raw_path, "wb")  # noqa: SIM115 - closed by close()/abort()
        self._offsets = [0]

    def add(self, ids: list[int]) -> None:
        arr = np.asarray(ids, dtype=self.dtype)
        self._raw.write(arr.tobytes())
        self._offsets.append(self._offsets[-1] + len(arr))

    @property
    def num_tokens(self) -> int:
        return self._offsets[-1]

    def close(self) -> int:
        """Write `stem.ids.npy` and `stem.offsets.npy`; returns the number of tokens."""
        self._raw.close()
        total = self._offsets[-1]
        try:
            flat = np.fromfile(self._raw_path, dtype=self.dtype, count=total)
            _save_npy_atomic(Path(f"{self.stem}.ids.npy"), flat)
            _save_npy_atomic(Path(f"{self.stem}.offsets.npy"), np.asarray(self._offsets, np.int64))
        finally:
            self._raw_path.unlink(missing_ok=True)
        return total

    def abort(self) -> None:
        self._raw.close()
        self._raw_path.unlink(missing_ok=True)


def write_token_array(stem: Path, sentences: Iterable[list[int]], *, vocab_size: int) -> int:
    """Write `stem.ids.npy` and `stem.offsets.npy` atomically; returns the number of tokens."""
    writer = TokenArrayWriter(stem, vocab_size=vocab_size)
    try:
        for ids in sentences:
            writer.add(ids)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        np.save(f, array)


class TokenArray:
    """Read-only view of a binarized split side: `len()`, `[i] -> np.ndarray`, `lengths`.

    The files are checked before use (shapes, dtypes, offsets from 0 to len(ids), never
    decreasing, and with `vocab_size` every id below it): damaged or hand-edited arrays would
    otherwise surface later as a traceback from batching or the embedding, or as wrong
    sentences.
    """

    def __init__(self, stem: Path, *, vocab_size: int | None = None):
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
        problem = _array_problem(self.ids, self.offsets, vocab_size)
        if problem:
            raise DataError(
                f"corrupt prepared data in {stem}.*.npy: {problem}; "
                "run `nmt prepare --force` to rebuild it"
            )
        self.lengths = np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.ids[self.offsets[i] : self.offsets[i + 1]], dtype=np.int64)

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])


def _array_problem(ids: np.ndarray, offsets: np.ndarray, vocab_size: int | None) -> str | None:
    """What is wrong with a loaded (ids, offsets) pair, or None."""
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        return f"ids are {ids.dtype} of shape {ids.shape}; expected a 1-D integer array"
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or len(offsets) < 1:
        return f"offsets are {offsets.dtype} of shape {offsets.shape}; expected 1-D integers"
    if offsets[0] != 0 or offsets[-1] != len(ids):
        return f"offsets run from {offsets[0]} to {offsets[-1]}; expected 0 to {len(ids)}"
    if len(offsets) > 1 and (np.diff(offsets) < 0).any():
        return "offsets decrease"
    if len(ids) and ids.dtype.kind == "i" and int(ids.min()) < 0:
        return f"an id is negative ({int(ids.min())})"
    if vocab_size is not None and len(ids) and int(ids.max()) >= vocab_size:
        return f"an id is {int(ids.max())}, beyond the vocabulary ({vocab_size} pieces)"
    return None
