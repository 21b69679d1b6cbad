"""Plain-text corpus files: strict UTF-8 with line numbers in errors, gzip; written through
nmt.files.atomic_write.

Lines are split on "\\n" only. `str.splitlines` would also split on U+2028, U+0085, form
feeds and other separators that real corpora contain, silently breaking the alignment of
source and target lines.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import sys
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from nmt.errors import DataError
from nmt.files import atomic_write

BOM = "\ufeff"  # U+FEFF at the start of a file: the UTF-8 byte-order mark


def open_binary(path: Path) -> IO[bytes]:
    """Open a file for reading bytes, transparently gunzipping `.gz` files."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if path.is_dir():
        raise DataError(f"expected a file but found a directory: {path}")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_lines(path: Path) -> Iterator[str]:
    """Yield each line of a UTF-8 text file as text: without its line end ("\\n" or "\\r\\n")
    and without a byte-order mark at the start of the file (utf-8-sig).

    The one reading of text input: corpora, evaluation files, `nmt translate`'s input.
    Raises DataError naming the file and line on invalid UTF-8 or a corrupt gzip stream (a
    bad header, corrupt deflate data, a stream cut short).
    """
    return as_text(iter_raw_lines(path))


def iter_raw_lines(path: Path) -> Iterator[str]:
    """Each line of a UTF-8 file exactly as stored, without its "\\n" (a BOM or "\\r" kept):
    for copying a corpus byte for byte. Errors as `iter_lines`."""
    number = 0
    try:
        with open_binary(path) as f:
            for number, line in enumerate(decode_lines(f, str(path)), start=1):  # noqa: B007
                yield line
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        if isinstance(exc, FileNotFoundError):
            raise DataError(f"file not found: {path}") from None
        raise DataError(f"{path}: cannot read after line {number}: {exc}") from None


def decode_lines(raw_lines: Iterable[bytes], name: str) -> Iterator[str]:
    """Byte lines (a file, stdin) as UTF-8 strings without their "\\n"; invalid UTF-8 is a
    DataError naming `name` and the line."""
    for number, raw in enumerate(raw_lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{name}: line {number} is not valid UTF-8 "
                f"(byte {exc.start}: {raw[exc.start : exc.start + 1]!r})"
                + _utf16_hint(raw if number == 1 else b"")
            ) from None
        yield text[:-1] if text.endswith("\n") else text


def as_text(lines: Iterable[str]) -> Iterator[str]:
    """Raw lines as text: a UTF-8 byte-order mark opening the first line is dropped (Windows
    editors write one; left in, it is a character of the first word) and so is a final "\\r"
    (CRLF line ends), as Python's utf-8-sig codec and universal newlines would."""
    for number, line in enumerate(lines):
        if number == 0 and line.startswith(BOM):
            line = line[1:]
        yield line[:-1] if line.endswith("\r") else line


def _utf16_hint(first_line: bytes) -> str:
    """Name the usual culprit, a UTF-16 file (Windows "Unicode" text), by its byte-order mark."""
    if first_line.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return (
            "; it starts with a UTF-16 byte-order mark: convert it to UTF-8, "
            "e.g. iconv -f UTF-16 -t UTF-8 IN > OUT"
        )
    return ""


STDIN = "-"  # the file name that means standard input, as in most Unix tools


def stdin_lines() -> Iterator[str]:
    """stdin's lines as text, read as files are (`iter_lines`)."""
    if sys.stdin is None:  # the process started with stdin closed (`nmt ... <&-`)
        raise DataError("stdin is closed: there is nothing to read for '-'; give a file")
    return as_text(decode_lines(sys.stdin.buffer, "stdin"))


def read_lines(path: Path | str) -> list[str]:
    """Every line of a text file, or of stdin for "-"."""
    return list(stdin_lines() if str(path) == STDIN else iter_lines(Path(path)))


def count_lines(path: Path) -> int:
    return sum(1 for _ in iter_lines(path))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_lines_atomic(path: Path, lines: Iterable[str]) -> int:
    """Write lines (each followed by "\\n") atomically; returns how many were written."""
    count = 0
    with atomic_write(path) as f:
        for line in lines:
            f.write(line)
            f.write("\n")
            count += 1
    return count


def check_one_stdin(**files) -> None:
    """At most one input can be stdin ("-"): the others would find it already read. The
    keyword names each input's option (`prefix_file` for --prefix-file)."""
    named = [f"--{key.replace('_', '-')}" for key, path in files.items() if str(path) == STDIN]
    if len(named) > 1:
        raise DataError(f"{' and '.join(named)} are both - (stdin): only one input can be stdin")
