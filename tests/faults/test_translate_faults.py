"""Fault injection in `nmt translate`: signals mid-run, unwritable outputs, odd input.

The contract under faults: a file output is complete or absent (an older file is left as it
was), never cut, and no temporary file is left behind; stdout only ever gets whole lines; a
signal or an unwritable path gives one `error: ...` line, no traceback. Whatever the input,
N lines in give N lines out.

The model is trained for a single update: its output is random pieces (byte pieces
included), which stresses the writer; the fault tests do not need good translations.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

HARD_TIMEOUT = 60  # seconds for any one step of a test: a hang fails instead of blocking CI


LINES = 400  # input lines of the interrupted runs, written 3 lines at a time
# Greedy search, outputs of at most 12 pieces: translating is cheap, and the runs that are
# stopped mid-way still have seconds of work left when the signal comes.
DECODE = ("decode.beam_size=1", "decode.max_len_a=0", "decode.max_len_b=12")


@pytest.fixture(scope="module")
def checkpoint(tiny_corpus, tmp_path_factory) -> Path:
    """A checkpoint after one update (seconds to train), decoding with DECODE."""
    import torch

    from nmt.runtime import Runtime
    from nmt.training.trainer import Trainer

    run = tiny_corpus.new_run(tmp_path_factory.mktemp("one_update"))
    cfg = tiny_corpus.config(run, "train.max_updates=1", *DECODE)
    Trainer(cfg, Runtime(torch.device("cpu"), "fp32"), log=lambda message: None).fit()
    return run / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def sentences(corpus_slice: Path) -> list[str]:
    """Real German sentences the model never saw (training used the first 64)."""
    with open(corpus_slice / "multi30k" / "train.de", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for _, line in zip(range(1000 + LINES), f)]
    return lines[1000:]


def write_input(directory: Path, lines: list[str], name: str = "in.de") -> Path:
    path = directory / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def lines_of(text: str) -> list[str]:
    """Split on "\\n" only, as the writer does; every line must end with one."""
    assert text.endswith("\n"), repr(text[-80:])
    return text[:-1].split("\n")


def default_sigint() -> None:
    """In the child before exec: SIGINT at its default, so that Python turns it into
    KeyboardInterrupt even when the test runner was started with SIGINT ignored (as a
    non-interactive shell starts background jobs), which the child would inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_translate(checkpoint: Path, *args: str, cwd: Path, preexec=default_sigint):
    """`python -m nmt.cli translate` in its own session (killed as a group on a hang)."""
    return subprocess.Popen(
        [sys.executable, "-m", "nmt.cli", "translate", str(checkpoint), *args],
        cwd=cwd,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=preexec,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    """(exit code, stdout, stderr); a process still running after HARD_TIMEOUT fails."""
    try:
        out, err = proc.communicate(timeout=HARD_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hang: still running after {HARD_TIMEOUT} s:\n{err.decode()[-3000:]}")
    return proc.returncode, out.decode("utf-8"), err.decode("utf-8")


def wait_for_partial_output(proc: subprocess.Popen, directory: Path, done: set[str]) -> None:
    """Until the run has written a chunk to a file not in `done` (its temporary file)."""
    deadline = time.monotonic() + HARD_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be stopped: {finish(proc)}")
        if any(p.stat().st_size > 0 for p in directory.iterdir() if p.name not in done):
            return
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("no output was written in time")


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


# ----------------------------------------------------------------------------- signals


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_run_leaves_the_old_output_and_no_temporary_file(
    signum, checkpoint, sentences, nmt_inline, tmp_path
):
    write_input(tmp_path, sentences)
    (tmp_path / "out.en").write_text("an older translation\n", encoding="utf-8")
    proc = start_translate(
        checkpoint,
        *("-i", "in.de", "-o", "out.en", "--chunk-lines", "3"),
        cwd=tmp_path,
    )
    wait_for_partial_output(proc, tmp_path, done={"in.de", "out.en"})
    proc.send_signal(signum)
    code, stdout, stderr = finish(proc)

    assert code == 128 + signum, stderr  # as a shell reports a process the signal stopped
    message = one_error_line(stderr)
    assert signal.Signals(signum).name in message and "out.en" in message, message
    assert stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.de", "out.en"]
    assert (tmp_path / "out.en").read_text(encoding="utf-8") == "an older translation\n"

    # The same command again replaces the old file with a complete translation.
    again = nmt_inline("translate", checkpoint, "-i", "in.de", "-o", "out.en", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(lines_of((tmp_path / "out.en").read_text(encoding="utf-8"))) == LINES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.de", "out.en"]


@pytest.mark.slow
def test_sigterm_while_writing_to_stdout_leaves_whole_lines(checkpoint, sentences, tmp_path):
    from nmt.decoding.engine import Engine

    write_input(tmp_path, sentences)
    proc = start_translate(checkpoint, *("-i", "in.de", "--chunk-lines", "3"), cwd=tmp_path)
    readable, _, _ = select.select([proc.stdout], [], [], HARD_TIMEOUT)
    assert readable, "nothing was written to stdout in time"
    proc.send_signal(signal.SIGTERM)
    code, stdout, stderr = finish(proc)

    assert code == 128 + signal.SIGTERM, stderr
    assert "SIGTERM" in one_error_line(stderr)
    written = lines_of(stdout)
    assert 3 <= len(written) < LINES  # stopped mid-run, after at least one chunk
    # Every line that came out is whole: the translation of its input line.
    expected = Engine.from_checkpoint(checkpoint).translate(sentences[: len(written)])
    assert written == expected.best


# ----------------------------------------------------------------------------- outputs


def test_a_fifo_output_is_written_in_place_not_replaced(
    checkpoint, sentences, nmt_inline, tmp_path
):
    """A named pipe (or /dev/stdout, /dev/null) must be opened and written, not replaced by
    a renamed temporary file: that would leave its reader waiting forever, and as root would
    replace /dev/null itself."""
    write_input(tmp_path, sentences[:4])
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    try:
        result = nmt_inline("translate", checkpoint, "-i", "in.de", "-o", "pipe", cwd=tmp_path)
        received, _ = reader.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("the pipe's reader got nothing: the output never opened it")
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    assert result.returncode == 0, result.stderr
    assert len(lines_of(received.decode("utf-8"))) == 4
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.de", "pipe"]


UNWRITABLE = {  # --output -> the path its error must name
    "parent is a file": ("afile/out.en", "afile"),
    "missing directory under a file": ("afile/sub/out.en", "afile/sub"),
    "read-only directory": ("readonly/out.en", "readonly/out.en"),
}


@pytest.mark.parametrize("case", list(UNWRITABLE))
def test_an_unwritable_output_gives_one_line_naming_the_path(
    case, checkpoint, nmt_inline, assert_clean_failure, tmp_path
):
    output, named = UNWRITABLE[case]
    if case == "read-only directory" and os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    write_input(tmp_path, ["Ein Hund läuft."])
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "readonly").mkdir(mode=0o555)
    result = nmt_inline("translate", checkpoint, "-i", "in.de", "-o", output, cwd=tmp_path)
    assert_clean_failure(result, f"--output {output}", named)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "in.de", "readonly"]
    assert list((tmp_path / "readonly").iterdir()) == []


def small_file_size_limit() -> None:
    """In the child: files may not grow past 1 KiB, so a write fails mid-run with EFBIG, as
    it would with ENOSPC on a full disk (Python ignores SIGXFSZ, so write() gets the error)."""
    default_sigint()
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


@pytest.mark.slow
def test_a_write_failure_mid_run_is_one_line_and_leaves_nothing(checkpoint, sentences, tmp_path):
    write_input(tmp_path, sentences)
    proc = start_translate(
        checkpoint,
        *("-i", "in.de", "-o", "out.en", "--chunk-lines", "3"),
        cwd=tmp_path,
        preexec=small_file_size_limit,
    )
    code, _, stderr = finish(proc)
    assert code != 0
    message = one_error_line(stderr)
    assert "cannot write --output out.en" in message and "File too large" in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.de"]


def test_line_breaks_decoded_from_byte_pieces_stay_inside_their_line(
    checkpoint, nmt_inline, monkeypatch, tmp_path
):
    """Byte fallback lets a model emit the pieces <0x0A> and <0x0D>: decoded, they are line
    breaks inside one hypothesis, which would shift every following output line."""
    from nmt.data.tokenizer import Tokenizer

    decode = Tokenizer.decode_tgt

    def with_line_breaks(self, ids):
        breaks = [self.tgt.piece_to_id(p) for p in ("<0x0A>", "<0x0D>", "<0x0A>")]
        return decode(self, [[*row[:2], *breaks, *row[2:]] for row in ids])

    monkeypatch.setattr(Tokenizer, "decode_tgt", with_line_breaks)
    lines = ["Ein Hund läuft.", "", "Zwei Männer spielen Fußball.", "Eine Frau."]
    write_input(tmp_path, lines)
    result = nmt_inline("translate", checkpoint, "-i", "in.de", "-o", "out.en", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "out.en").read_text(encoding="utf-8")
    assert "\r" not in text
    out = lines_of(text)
    assert len(out) == len(lines)
    assert [bool(line.strip()) for line in out] == [True, False, True, True]


# ----------------------------------------------------------------------------- inputs

# Inputs not in tests/decoding/test_translate_cli.py's EDGE_LINES (which has empty,
# whitespace, 2000 words, CJK, emoji, U+2028/U+0085/FF and CRLF).
ODD_LINES = [
    "\ufeffEin Mann mit einem BOM am Dateianfang.",
    "e\u0301\u0301\u0301 Cafe\u0301",  # stacked combining marks
    "\u0301\u0302\u0303",  # combining marks alone
    "Ein\x00Hund",  # NUL inside a line
    "\x00",  # NUL alone: nothing left after normalisation
    "\x1b[31mrot\x1b[0m",  # ANSI escapes
    "👩\u200d👩\u200d👧 Familie",  # a ZWJ emoji sequence
    "\u202eRTL override\u202c",  # bidi controls
    "\ue000\uffff\U0010fffd",  # private use, a noncharacter
    "Привет мир، مرحبا",  # Cyrillic, Arabic
    " ".join(["Ein", "Hund", "läuft", "über", "die", "Wiese."] * 834),  # 5004 words
    "x" * 20000,  # one 20000-character "word"
    "\t\u00a0\u3000",  # whitespace only: TAB, NBSP, ideographic space
    "",
    "Die letzte Zeile hat kein Zeilenende",
]
EMPTY_OUT = {4, 12, 13}


@pytest.mark.slow
def test_odd_input_gives_one_line_per_line_through_stdin_and_files(
    checkpoint, nmt_inline, tmp_path
):
    data = "\n".join(ODD_LINES).encode("utf-8")  # no final newline
    (tmp_path / "odd.de").write_bytes(data)
    piped = subprocess.run(
        [sys.executable, "-m", "nmt.cli", "translate", str(checkpoint)],
        input=data,
        capture_output=True,
        cwd=tmp_path,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        timeout=HARD_TIMEOUT,
    )
    assert piped.returncode == 0, piped.stderr.decode()
    out = lines_of(piped.stdout.decode("utf-8"))
    assert len(out) == len(ODD_LINES)
    assert {i for i, line in enumerate(out) if not line.strip()} == EMPTY_OUT
    assert "2 input lines were longer" in piped.stderr.decode()  # truncated, not dropped

    from_file = nmt_inline("translate", checkpoint, "-i", "odd.de", "-o", "odd.en", cwd=tmp_path)
    assert from_file.returncode == 0, from_file.stderr
    assert lines_of((tmp_path / "odd.en").read_text(encoding="utf-8")) == out
