"""`nmt translate`: stream lines from a file or stdin through a Translator, in chunks.

One output line per input line, always. A file output is written to a temporary name and
renamed when complete, so an interrupted run leaves either the old file or nothing, never a
cut line; stdout gets whole lines only, flushed chunk by chunk.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from nmt.data.text import atomic_write, iter_lines
from nmt.errors import DataError


def stdin_lines() -> Iterator[str]:
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"stdin: line {number} is not valid UTF-8 (byte {exc.start})") from None
        yield text[:-1] if text.endswith("\n") else text


@contextlib.contextmanager
def open_output(output: str):
    if output == "-":
        yield sys.stdout
    else:
        with atomic_write(Path(output)) as f:
            yield f


def format_nbest(index: int, hyps, texts: list[str], n_best: int) -> list[str]:
    """`index<TAB>score<TAB>text` rows. An empty input has no hypotheses: its empty output
    (certain, score 0) fills n_best rows, so every input keeps n_best well-formed rows."""
    if not hyps:
        return [f"{index}\t0.0000\t"] * n_best
    return [f"{index}\t{h.score:.4f}\t{t}" for h, t in zip(hyps, texts)]


def translate_stream(
    checkpoint: Path, input: str, output: str, *, device: str, chunk_lines: int, **search
) -> None:
    from nmt.decoding.translator import TranslationStats, Translator

    if output != "-" and Path(output).is_dir():  # found before translating, not at the end
        raise DataError(f"--output {output} is a directory; give a file name")
    batch_tokens = search.pop("batch_tokens", None)
    translator = Translator.from_checkpoint(checkpoint, device=device, **search)
    if batch_tokens:
        translator.batch_tokens = batch_tokens
    n_best = translator.settings.n_best
    lines = stdin_lines() if input == "-" else iter_lines(Path(input))
    total = TranslationStats()
    started = time.perf_counter()
    index = 0
    with open_output(output) as out:
        while chunk := list(itertools.islice(lines, chunk_lines)):
            result = translator.translate(chunk)
            for hyps, texts in zip(result.hypotheses, result.texts):
                if search.get("n_best"):
                    rows = format_nbest(index, hyps, texts, n_best)
                else:
                    rows = [texts[0]]
                out.write("\n".join(rows) + "\n")
                index += 1
            out.flush()
            total.add(result.stats)
            _progress(total, time.perf_counter() - started)
    _finish(total, time.perf_counter() - started, n_best)


def _progress(stats, seconds: float) -> None:
    if sys.stderr.isatty():
        print(
            f"\r{stats.sentences} sentences, {stats.sentences / seconds:.1f} sent/s",
            end="",
            file=sys.stderr,
            flush=True,
        )


def _finish(stats, seconds: float, n_best: int) -> None:
    if sys.stderr.isatty():
        print(file=sys.stderr)
    seconds = max(seconds, 1e-9)
    print(
        f"translated {stats.sentences} lines in {seconds:.1f}s: {stats.sentences / seconds:.1f} "
        f"sentences/s, {stats.output_tokens / seconds:.0f} tokens/s"
        + (f"; {stats.empty} empty" if stats.empty else ""),
        file=sys.stderr,
    )
    if stats.truncated:
        print(
            f"warning: {stats.truncated} input lines were longer than decode.max_input_tokens "
            "and were truncated",
            file=sys.stderr,
        )
