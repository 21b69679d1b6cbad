"""Interleavings: two writers at once, closed pipes and streams, symlinks, killed stages.

Every process is a real `nmt` process on the tiny corpus of tests/plugins/tiny_corpus.py.
One training run is shared by the module: while it runs, a second `nmt train` of the same
run directory must be refused; its checkpoint then serves the translate tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from _trainkit import assert_clean_failure, fork_server, nmt, train_args

from nmt.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]
LOCK_NOTE = ".nmt-lock.json"
LONG_RUN = ("train.max_updates=120", "train.save_every=60", "train.keep_last=1")


def start(*args: str, cwd: Path, **popen) -> subprocess.Popen:
    """`python -m nmt.cli ARGS` started, not waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "nmt.cli", *map(str, args)],
        cwd=cwd,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        text=True,
        **popen,
    )


def wait_for(condition, *, timeout: float = 120, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def metric_steps(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["step"] for line in lines if json.loads(line)["kind"] == "train"]


@dataclass(frozen=True)
class Contested:
    run: Path
    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess
    first_pid: int


@pytest.fixture(scope="module")
def contested(tiny_corpus, tmp_path_factory) -> Contested:
    """`nmt train` A runs; once it holds the run's lock, `nmt train` B of the same run."""
    fork_server()  # imports torch meanwhile: B then starts in a fraction of A's run time
    root = tmp_path_factory.mktemp("contested")
    run = tiny_corpus.new_run(root / "run")
    args = train_args(tiny_corpus, run, *LONG_RUN)
    first = start(*args, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Training has begun (so the lock, taken before, is held); B then needs about a second.
    training = run / "metrics.jsonl"
    wait_for(lambda: training.exists() or first.poll() is not None, what="A's first update")
    second = nmt(*args, cwd=root)
    running_during_second = first.poll() is None
    out, err = first.communicate(timeout=300)
    assert running_during_second, "A finished before B tried: make LONG_RUN longer"
    done = subprocess.CompletedProcess(args, first.returncode, out, err)
    return Contested(run, done, second, first.pid)


def test_a_second_train_of_a_run_is_refused_naming_the_first(contested):
    message = assert_clean_failure(contested.second)
    assert contested.second.returncode == 2, contested.second.stderr
    assert f"{contested.run} is in use by pid {contested.first_pid} on " in message, message
    assert "(nmt train " in message and ") since 20" in message, message
    assert "update " not in contested.second.stderr  # it never trained


def test_the_first_train_is_unaffected_and_logs_each_update_once(contested):
    assert contested.first.returncode == 0, contested.first.stderr
    assert metric_steps(contested.run) == list(range(1, 121))
    assert load_checkpoint(contested.run / "checkpoints" / "last.pt")["train_state"]["step"] == 120
    assert not (contested.run / LOCK_NOTE).exists()  # released with its note


# --------------------------------------------------------------------------- translate


@pytest.fixture(scope="module")
def source(contested, tiny_corpus) -> Path:
    lines = (tiny_corpus.data_dir / "multi30k" / "val.de").read_text(encoding="utf-8")
    path = contested.run.parent / "in.de"
    path.write_text("".join(lines.splitlines(keepends=True)[:12]), encoding="utf-8")
    return path


def test_two_translations_to_one_file_leave_one_whole_translation(contested, source):
    checkpoint = contested.run / "checkpoints" / "last.pt"
    cwd = source.parent
    args = ("translate", checkpoint, "-i", source.name, "-o", "same.en", "--beam-size", "1")
    args += ("--chunk-lines", "1")  # many writes each: the two runs interleave
    pair = [start(*args, cwd=cwd, stderr=subprocess.PIPE) for _ in range(2)]
    codes = [p.wait(timeout=300) for p in pair]
    assert codes == [0, 0], [p.stderr.read() for p in pair]
    alone = nmt("translate", checkpoint, "-i", source.name, "--beam-size", "1", cwd=cwd)
    output = (cwd / "same.en").read_bytes()
    assert b"\0" not in output
    assert output.decode().splitlines() == alone.stdout.splitlines()
    assert len(alone.stdout.splitlines()) == 12
    assert [p.name for p in cwd.iterdir() if p.name.startswith(".same")] == []


def test_translating_into_a_symlink_writes_its_target(contested, source, tmp_path):
    checkpoint = contested.run / "checkpoints" / "last.pt"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "real.en").write_text("old\n")
    (tmp_path / "latest.en").symlink_to("out/real.en")
    args = ("translate", checkpoint, "-i", source, "-o", "latest.en", "--beam-size", "1")
    result = nmt(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "latest.en").is_symlink()
    assert len((tmp_path / "out" / "real.en").read_text().splitlines()) == 12


@pytest.mark.parametrize(
    ("redirect", "message"),
    [
        ("<&-", "stdin is closed; give --input FILE"),
        (">&-", "stdout is closed; give --output FILE"),
    ],
)
def test_closed_stdin_or_stdout_is_one_error_line(contested, redirect, message, tmp_path):
    checkpoint = contested.run / "checkpoints" / "last.pt"
    result = subprocess.run(
        ["sh", "-c", f'exec "$0" -m nmt.cli translate "$1" {redirect}', sys.executable, checkpoint],
        cwd=tmp_path,
        input="Ein Hund.\n",
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert (result.returncode, result.stderr) == (2, f"error: {message}\n")


def test_a_closed_stdout_is_a_closed_log_for_commands_that_do_not_write_it(tiny_corpus, tmp_path):
    """`nmt prepare ... >&-`: its summary table is a log, like stderr (found broken: rich's
    table on a None sys.stdout, AttributeError traceback, exit 1)."""
    run = tmp_path / "run"
    result = subprocess.run(
        ["sh", "-c", 'exec "$0" -m nmt.cli "$@" >&-', sys.executable, "prepare"]
        + [str(a) for a in tiny_corpus.cli_args(run)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert (run / "data" / "spm.model").is_file()


# --------------------------------------------------------------------------- pipes


def test_a_closed_log_pipe_never_stops_training(tiny_corpus, tmp_path):
    """`nmt train ... 2>&1 | head -2`: the reader goes after two lines; training goes on to
    its last update and saves, its log going to /dev/null."""
    run = tiny_corpus.new_run(tmp_path / "run")
    args = train_args(tiny_corpus, run, "train.max_updates=30", "train.save_every=10")
    proc = start(*args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    head = [proc.stdout.readline() for _ in range(2)]
    proc.stdout.close()  # what `head -2` does when it exits
    assert proc.wait(timeout=300) == 0
    assert all(head), head
    assert load_checkpoint(run / "checkpoints" / "last.pt")["train_state"]["step"] == 30
    assert metric_steps(run) == list(range(1, 31))


# --------------------------------------------------------------------------- killed prepare


def test_a_killed_prepare_leaves_no_staging_directory_after_the_next(tiny_corpus, tmp_path):
    """SIGKILL while `prepare` builds its staging directory (no handler runs), then prepare
    again: the dead one's staging directory goes, as does anything else hidden."""
    run = tmp_path / "run"
    args = ["prepare", *tiny_corpus.cli_args(run)]
    proc = start(*args, cwd=tmp_path, stderr=subprocess.DEVNULL)

    def staging() -> list[str]:
        names = os.listdir(run) if run.is_dir() else []
        return [n for n in names if n.startswith(".data.")]

    try:
        wait_for(lambda: staging() or proc.poll() is not None, what="the staging directory")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert staging(), "prepare finished before it could be killed"
    result = nmt(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(run)) == ["config.yaml", "data"]


# --------------------------------------------------------------------------- full and read-only
# Real conditions from the kernel (see tests/_mounts.py): a tmpfs too small for the output
# (ENOSPC) or a read-only bind mount (EROFS), in a private mount namespace.

INSPECT = '"$0" -m nmt.cli "$@"; code=$?; echo "--- $code"; find "$INSPECT" -mindepth 1 | sort'


def nmt_in_mounts(*args, cwd: Path, inspect: Path, **mounts):
    """`nmt ARGS` under `mounts` (see run_in_mounts); also returns what `inspect` holds
    afterwards, seen from inside (a tmpfs is gone once the namespace is): a
    (CompletedProcess, [relative paths]) pair."""
    from _mounts import run_in_mounts

    argv = ["sh", "-c", INSPECT, sys.executable, *map(str, args)]
    result = run_in_mounts(argv, cwd=cwd, env={"INSPECT": str(inspect)}, **mounts)
    out, _, listing = result.stdout.rpartition("--- ")
    code, *files = listing.splitlines()
    done = subprocess.CompletedProcess(args, int(code), out, result.stderr)
    return done, [str(Path(f).relative_to(inspect)) for f in files]


def one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == result.stderr.splitlines()[-1], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_download_to_a_full_disk(tiny_corpus, tmp_path):
    mirror = tiny_corpus.data_dir.parent / "mirror"
    data = tmp_path / "data"
    data.mkdir()
    args = ("download", "multi30k", "--langs", "de,en", "--mirror", mirror, "--data-dir", data)
    result, left = nmt_in_mounts(*args, cwd=tmp_path, inspect=data, tmpfs=data, size="8k")
    one_error_line(result, "No space left on device", f"{data}/multi30k/")
    assert [f for f in left if "/." in f or f.startswith(".")] == []  # no temporary
    assert "multi30k/manifest.json" not in left or "multi30k/train.en" in left


def test_prepare_on_a_full_disk(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    args = ("prepare", *tiny_corpus.cli_args(run))
    result, left = nmt_in_mounts(*args, cwd=tmp_path, inspect=run, tmpfs=run, size="64k")
    one_error_line(result, "No space left on device", str(run))
    assert left == []  # no staging directory, no lock note, no half of data/


def test_train_in_a_read_only_run_directory(tiny_corpus, tmp_path):
    run = tiny_corpus.new_run(tmp_path / "run")
    args = train_args(tiny_corpus, run)
    result, left = nmt_in_mounts(*args, cwd=tmp_path, inspect=run, read_only=run)
    one_error_line(result, f"cannot write {run}/config.yaml: Read-only file system")
    assert [f for f in left if not f.startswith("data")] == []


def test_evaluate_into_a_read_only_directory(contested, tmp_path):
    checkpoint = contested.run / "checkpoints" / "last.pt"
    out = tmp_path / "eval"
    out.mkdir()
    args = ("evaluate", checkpoint, "--split", "val", "--output", out)
    result, left = nmt_in_mounts(*args, cwd=contested.run.parent, inspect=out, read_only=out)
    one_error_line(result, f"cannot write {out}/val.step120-", "Read-only file system")
    assert left == []


def test_plot_to_a_full_disk(contested, tmp_path):
    out = tmp_path / "plots"
    out.mkdir()
    args = ("plot", contested.run, "--output", out / "curves.png")
    result, left = nmt_in_mounts(*args, cwd=tmp_path, inspect=out, tmpfs=out, size="8k")
    one_error_line(result, f"cannot write {out}/curves.png: No space left on device")
    assert left == []
