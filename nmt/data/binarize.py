"""Token ids as one flat array plus offsets, loaded by memory map.

A split/side is two `.npy` files: `<stem>.ids.npy` (all sentences' ids concatenated, uint16
when the vocabulary fits, else int32) and `<stem>.offsets.npy` (int64, n + 1 entries;
sentence i is ids[offsets[i]:offsets[i + 1]]). Only the offsets are read into memory, so
corpora larger than RAM train fine. Ids exclude BOS/EOS: batching adds them.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from nmt.errors import DataError
from nmt.files import atomic_write


def ids_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


class TokenArrayWriter:
    """Append sentences (one at a time or a chunk at once); `close()` writes the arrays
    atomically.

    Ids and offsets stream into temporary raw files, and `close()` copies each behind an
    `.npy` header block by block, so memory stays flat however large the corpus (the files
    are byte for byte what `np.save` writes). `length_counts[n]` counts the sentences of n
    ids, for length statistics without reading the arrays back.
    """

    def __init__(self, stem: Path, *, vocab_size: int):
        self.stem = Path(stem)
        self.dtype = ids_dtype(vocab_size)
        self._raw_paths = {
            part: self.stem.with_name(f"{self.stem.name}.{part}.raw.tmp")
            for part in ("ids", "offsets")
        }
        self._raw = {part: open(path, "wb") for part, path in self._raw_paths.items()}  # noqa: SIM115 - closed by close()/abort()
        self._raw["offsets"].write(np.zeros(1, np.int64).tobytes())
        self._sentences = 0
        self._tokens = 0
        self.length_counts = np.zeros(0, np.int64)

    def add(self, ids: list[int]) -> None:
        self.add_many(np.asarray(ids, dtype=self.dtype), np.array([len(ids)], np.int64))

    def add_many(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        """Append len(lengths) sentences whose ids are `flat`, concatenated (N = sum of
        lengths): flat (N,), lengths (len,)."""
        lengths = np.asarray(lengths, np.int64)
        self._raw["ids"].write(np.asarray(flat, dtype=self.dtype).tobytes())
        ends = self._tokens + np.cumsum(lengths)
        self._raw["offsets"].write(ends.tobytes())
        self._tokens = int(ends[-1]) if len(ends) else self._tokens
        self._sentences += len(lengths)
        counts = np.bincount(lengths)
        grow = len(counts) - len(self.length_counts)
        if grow > 0:
            self.length_counts = np.pad(self.length_counts, (0, grow))
        self.length_counts[: len(counts)] += counts

    @property
    def num_tokens(self) -> int:
        return self._tokens

    @property
    def sentences(self) -> int:
        return self._sentences

    def close(self) -> int:
        """Write `stem.ids.npy` and `stem.offsets.npy`; returns the number of tokens."""
        for raw in self._raw.values():
            raw.close()
        try:
            _raw_to_npy(self._raw_paths["ids"], Path(f"{self.stem}.ids.npy"), self.dtype)
            _raw_to_npy(self._raw_paths["offsets"], Path(f"{self.stem}.offsets.npy"), np.int64)
        finally:
            self._remove_raw()
        return self._tokens

    def abort(self) -> None:
        for raw in self._raw.values():
            raw.close()
        self._remove_raw()

    def _remove_raw(self) -> None:
        for path in self._raw_paths.values():
            path.unlink(missing_ok=True)


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


def _raw_to_npy(raw: Path, path: Path, dtype: np.dtype) -> None:
    """`raw` (the bare bytes of a 1-D `dtype` array) as the `.npy` file `path`, atomically,
    copied in blocks: the header `np.save` would write, then the bytes as they are."""
    dtype = np.dtype(dtype)
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": (raw.stat().st_size // dtype.itemsize,),
    }
    with atomic_write(path, "wb") as out, open(raw, "rb") as source:
        np.lib.format.write_array_header_1_0(out, header)
        shutil.copyfileobj(source, out, _COPY_BLOCK)


_COPY_BLOCK = 1 << 16


def percentiles_of_counts(counts: np.ndarray, qs: Iterable[float]) -> list[float]:
    """`np.percentile(lengths, qs)` (linear interpolation) from `counts[n]`, the number of
    lengths equal to n, without the lengths themselves: position p = q / 100 * (N - 1) of
    the sorted lengths, between the order statistics at floor(p) and ceil(p)."""
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1])

    def order_statistic(k: int) -> int:  # the k-th smallest length, 0-based
        return int(np.searchsorted(cumulative, k + 1))

    out = []
    for q in qs:
        position = q / 100 * (total - 1)
        lo, hi = math.floor(position), math.ceil(position)
        a, b = order_statistic(lo), order_statistic(hi)
        out.append(a + (b - a) * (position - lo))
    return out


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
