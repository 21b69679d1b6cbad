"""`nmt translate`: stream lines from a file or stdin through a Translator, in chunks.

One output line per input line, always. A file output is written to a temporary name and
renamed when complete, so an interrupted run leaves either the old file or nothing, never a
cut line; stdout gets whole lines only, flushed chunk by chunk. Lines fed interactively (a
terminal, a program writing one line and waiting) are answered as each arrives.
"""

from __future__ import annotations

import contextlib
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from nmt.data.text import check_one_stdin, count_lines, iter_lines, read_lines, stdin_lines
from nmt.decoding.backend import TranslationBackend, TranslationStats, require
from nmt.errors import DataError, NmtError, OutputError
from nmt.files import atomic_write, os_reason


def input_chunks(input: str, chunk_lines: int) -> Iterator[list[str]]:
    """The input's lines as text (`nmt.data.text`'s one reading: UTF-8, BOM and CRLF
    dropped), in lists of at most `chunk_lines`.

    A file gives full chunks. stdin gives the lines read so far as soon as no more input is
    waiting, so a user typing, or a program feeding one line and reading its answer before
    writing the next, gets each line translated as it arrives; a pipe or file that has the
    next lines ready still fills whole chunks, so batch throughput stays the same.
    """
    if input != "-":
        lines = iter_lines(Path(input))
        return take_chunks(lines, chunk_lines, more_waiting=lambda: True)
    lines = stdin_lines()  # refuses a closed stdin before sys.stdin.buffer is touched
    return take_chunks(lines, chunk_lines, more_waiting=lambda: _readable(sys.stdin.buffer))


def take_chunks(
    lines: Iterator[str], chunk_lines: int, *, more_waiting: Callable[[], bool]
) -> Iterator[list[str]]:
    """Lists of up to `chunk_lines` lines; a list ends early when `more_waiting()` says the
    next line would have to be waited for."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= chunk_lines or not more_waiting():
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _readable(stream) -> bool:
    """Whether reading `stream` now returns without waiting (data or end of input are
    there). Lines already in the reader's buffer are not seen: at worst a chunk ends early.
    Where select cannot watch the stream it counts as readable, which is what a file is."""
    try:
        ready, _, _ = select.select([stream], [], [], 0)
    except (OSError, ValueError, TypeError):
        return True
    return bool(ready)


@contextlib.contextmanager
def open_output(output: str):
    """stdout; a FIFO or a device (/dev/stdout, /dev/null) written in place, since renaming a
    file over one would replace it; else a file written atomically (through a symlink, to
    its target). Failures to create or write the file (missing permission, full disk)
    become one error naming it."""
    if output == "-":
        if sys.stdout is None:
            raise DataError("stdout is closed; give --output FILE")
        yield sys.stdout
        return
    path = Path(output)
    if path.exists() and not path.is_file():
        try:
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                yield f
        except OSError as exc:
            raise OutputError(f"cannot write --output {output}: {os_reason(exc)}") from None
    else:
        with atomic_write(path, describe=f"--output {output}") as f:
            yield f


class TranslationStopped(NmtError):
    """SIGTERM or SIGINT stopped `nmt translate`. The exit code is 128 + the signal number,
    what a shell reports for a process killed by that signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class _Stop(BaseException):
    """Raised by the signal handler. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way up swallows it; atomic_write removes its temporary file."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _SignalGuard:
    """SIGTERM and SIGINT stop the translation at once, except while a chunk is written:
    then they wait for its last line, so stdout never gets a cut line. Python's default
    SIGTERM action kills the process without unwinding, which would leave the temporary
    output file behind; raising instead unwinds through atomic_write's clean-up."""

    signals = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.holding = False
        self.pending: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> _SignalGuard:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set handlers (and receives signals)
        for signum in self.signals:
            current = signal.getsignal(signum)
            if current is not signal.SIG_IGN:  # ignored on purpose (nohup, `cmd &` in a script)
                self.previous[signum] = current
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def _handle(self, signum, frame) -> None:
        if self.holding and self.pending is None:
            self.pending = signum  # a second signal does not wait (a reader may have stalled)
        else:
            raise _Stop(signum)

    @contextlib.contextmanager
    def held(self):
        """Signals wait until the block is done, then stop the run."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending is not None:
            raise _Stop(self.pending)

    def hold_to_the_end(self) -> None:
        """The translation is complete: let the output be finished even if a signal comes."""
        self.holding = True


def _stopped_message(signum: int, lines_done: int, output: str) -> str:
    name = signal.Signals(signum).name
    if output == "-":
        return f"{name} received: stopped after {lines_done} lines, all written whole to stdout"
    return (
        f"{name} received: stopped after {lines_done} lines; {output} was not written "
        "(a file output is only written complete)"
    )


def format_nbest(index: int, hyps, texts: list[str], n_best: int) -> list[str]:
    """`index<TAB>score<TAB>text` rows. An empty input has no hypotheses: its empty output
    (certain, score 0) fills n_best rows, so every input keeps n_best well-formed rows."""
    if not hyps:
        return [f"{index}\t0.0000\t"] * n_best
    return [f"{index}\t{h.score:.4f}\t{t}" for h, t in zip(hyps, texts)]


def read_prefixes(prefix_file: str | None, input: str) -> list[str] | None:
    """The `--prefix-file` lines; with a file input, a line count that differs from the
    input's is refused now, before the model is loaded (stdin is checked as it is read)."""
    if prefix_file is None:
        return None
    check_one_stdin(input=input, prefix_file=prefix_file)
    prefixes = read_lines(prefix_file)
    if input != "-":
        lines = count_lines(Path(input))
        if lines != len(prefixes):
            raise DataError(prefix_count_message(prefix_file, len(prefixes), input, lines))
    return prefixes


def prefix_count_message(prefix_file: str, prefixes: int, input: str, lines: int) -> str:
    source = "stdin" if input == "-" else input
    return (
        f"--prefix-file {prefix_file} has {prefixes} lines but the input ({source}) has "
        f"{lines}; give one prefix per input line (an empty line for none)"
    )


def _chunk_prefixes(prefixes, prefix_file, input, start: int, chunk: list[str]):
    """The prefixes of the input lines start .. start + len(chunk) - 1 (None: no file)."""
    if prefixes is None:
        return None
    if start + len(chunk) > len(prefixes):
        raise DataError(prefix_count_message(prefix_file, len(prefixes), input, start + len(chunk)))
    return prefixes[start : start + len(chunk)]


def translate_stream(
    load: Callable[[], TranslationBackend],
    input: str,
    output: str,
    *,
    model: Path,
    chunk_lines: int,
    prefix_file: str | None = None,
    print_alignment: bool = False,
    n_best_rows: bool = False,
) -> None:
    """`nmt translate`: `load()` gives the backend (after the input and output are checked);
    `model` names it in refusals; `n_best_rows` writes `index<TAB>score<TAB>text` rows."""
    from nmt.decoding.alignment import align_translation, check_alignment_support

    if output != "-" and Path(output).is_dir():  # found before translating, not at the end
        raise DataError(f"--output {output} is a directory; give a file name")
    if input == "-" and sys.stdin is None:  # `nmt translate <&-`: refused before loading
        raise DataError("stdin is closed; give --input FILE")
    if output == "-" and sys.stdout is None:
        raise DataError("stdout is closed; give --output FILE")
    prefixes = read_prefixes(prefix_file, input)
    total = TranslationStats()
    started = time.perf_counter()
    index = 0  # input lines written so far
    guard = _SignalGuard()
    try:
        with guard:
            translator = load()
            if prefixes is not None:
                require(translator, "prefixes", what=f"{model} is a directory")
            if print_alignment:
                check_alignment_support(translator, model)
            n_best = translator.settings.n_best if n_best_rows else None
            chunks = input_chunks(input, chunk_lines)
            with open_output(output) as out:
                for chunk in chunks:
                    chunk_prefixes = _chunk_prefixes(prefixes, prefix_file, input, index, chunk)
                    result = translator.translate(chunk, prefixes=chunk_prefixes)
                    aligned = (
                        align_translation(translator, chunk, result) if print_alignment else None
                    )
                    with guard.held():
                        index = _write_chunk(out, result, index, n_best, aligned)
                    total.add(result.stats)
                    _progress(total, time.perf_counter() - started)
                if prefixes is not None and index != len(prefixes):  # stdin ended early
                    raise DataError(prefix_count_message(prefix_file, len(prefixes), input, index))
                guard.hold_to_the_end()
    except _Stop as stop:
        message = _stopped_message(stop.signum, index, output)
        raise TranslationStopped(message, stop.signum) from None
    where = f"{translator.device.type} {translator.numerics}"
    _finish(total, time.perf_counter() - started, where)


def _write_chunk(out, result, index: int, n_best: int | None, alignments=None) -> int:
    """Write one chunk's outputs as whole lines (n-best rows when `n_best` is given; each
    row ending in <TAB>alignment with `alignments`, one list per line as `result.texts`) and
    flush; returns the index of the next input line."""
    for line, (hyps, texts) in enumerate(zip(result.hypotheses, result.texts)):
        rows = [texts[0]] if n_best is None else format_nbest(index, hyps, texts, n_best)
        if alignments is not None:
            aligned = alignments[line] * (len(rows) if not hyps else 1)  # an empty line's rows
            rows = [f"{row}\t{alignment}" for row, alignment in zip(rows, aligned)]
        out.write("\n".join(rows) + "\n")
        index += 1
    out.flush()
    return index


def _progress(stats, seconds: float) -> None:
    if sys.stderr.isatty():
        n = stats.sentences
        print(f"\r{n} sentences, {n / seconds:.1f} sent/s", end="", file=sys.stderr, flush=True)


def _finish(stats, seconds: float, where: str) -> None:
    """The summary line on stderr; `where` is the device and the weights' numerics."""
    if sys.stderr.isatty():
        print(file=sys.stderr)
    seconds = max(seconds, 1e-9)
    print(
        f"translated {stats.sentences} lines in {seconds:.1f}s ({where}): "
        f"{stats.sentences / seconds:.1f} sentences/s, {stats.output_tokens / seconds:.0f} tokens/s"
        + (f"; {stats.empty} empty" if stats.empty else ""),
        file=sys.stderr,
    )
    if stats.truncated:
        print(
            f"warning: {stats.truncated} input lines were longer than decode.max_input_tokens "
            "and were truncated",
            file=sys.stderr,
        )
