"""`nmt translate` fed one line at a time answers each line before the next is written, and
reads every text input (files and stdin) the one way: a BOM and CRLF line ends are dropped."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time

import pytest
from _cli import assert_clean_failure

from nmt.decoding.stream import take_chunks

LINES = [
    "Ein Mann fährt auf einem Fahrrad.",
    "",
    "Zwei Hunde spielen im Schnee.",
    "Eine Frau liest ein Buch.",
]
ANSWER_TIMEOUT = 60  # seconds for one line's answer (the first includes loading the model)


def read_line_within(proc: subprocess.Popen, seconds: float) -> str:
    """One line of the child's stdout, or fail if it has not come within `seconds`."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    buffer = b""
    deadline = time.monotonic() + seconds
    while not buffer.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not selector.select(timeout=left):
            pytest.fail(f"no answer within {seconds}s (got {buffer!r} so far)")
        byte = os.read(proc.stdout.fileno(), 1)
        if not byte:
            pytest.fail(f"stdout closed before a full line (got {buffer!r})")
        buffer += byte
    return buffer[:-1].decode("utf-8")


def test_each_line_is_answered_before_the_next_is_written(tiny_run, tmp_path):
    """Found broken: the answers came only after 2000 lines (chunk_lines) or end of input."""
    batch = subprocess.run(
        [sys.executable, "-m", "nmt.cli", "translate", str(tiny_run.checkpoint), "--device", "cpu"],
        input="\n".join(LINES) + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert batch.returncode == 0, batch.stderr
    expected = batch.stdout.split("\n")[:-1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmt.cli", "translate", str(tiny_run.checkpoint), "--device", "cpu"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        answers = []
        for line in LINES:
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()
            answers.append(read_line_within(proc, ANSWER_TIMEOUT))
        proc.stdin.close()
        assert proc.wait(timeout=ANSWER_TIMEOUT) == 0, proc.stderr.read()
        assert proc.stdout.read() == b""  # N in, N out: nothing more after the last answer
    finally:
        proc.kill()
        proc.wait()
    assert answers == expected  # the same translations as in one batch
    assert answers[1] == ""


def test_chunks_end_when_the_next_line_would_wait_and_are_full_otherwise():
    lines = [f"line {i}" for i in range(7)]
    full = list(take_chunks(iter(lines), 3, more_waiting=lambda: True))
    assert full == [lines[0:3], lines[3:6], lines[6:7]]
    one_by_one = list(take_chunks(iter(lines), 3, more_waiting=lambda: False))
    assert one_by_one == [[line] for line in lines]


def test_a_closed_stdin_is_one_error_line(tiny_run, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nmt.cli", "translate", str(tiny_run.checkpoint), "--device", "cpu"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
        cwd=tmp_path,
    )
    # /dev/null is an empty input, not a closed one: no lines, no error
    assert (result.returncode, result.stdout) == (0, ""), result.stderr
    command = f'exec "{sys.executable}" -m nmt.cli translate "{tiny_run.checkpoint}" <&-'
    closed = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
        cwd=tmp_path,
    )
    assert_clean_failure(closed, "stdin is closed")
