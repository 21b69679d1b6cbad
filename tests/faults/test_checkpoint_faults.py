"""Checkpoint files under faults: a full disk while saving, damaged files, files that would
run code, files of another format, and what an interrupted save leaves behind.

The load function and the CLI (`nmt translate`, `nmt train` resuming, `nmt average`) must
each refuse a bad file with one clear message naming it (a `CheckpointError`; on the command
line one `error: ...` line, a non-zero exit and no traceback), never run code from it,
never load wrong weights silently, and never damage the files that were already there.
"""

from __future__ import annotations

import errno
import os
import random
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _trainkit import (
    assert_clean_failure,
    assert_same_training_state,
    cut_in_half,
    flip_one_bit,
    leftovers,
    nmt,
    train_args,
    visible_checkpoints,
)

import nmt as nmt_package
from nmt import checkpoint as ckpt
from nmt.checkpoint import (
    FORMAT_VERSION,
    OLDEST_FORMAT_VERSION,
    load_checkpoint,
    save_checkpoint,
)
from nmt.errors import CheckpointError
from nmt.training.checkpoints import CheckpointManager, average_checkpoints


class Exploit:
    """Pickles as a call of os.system: a plain pickle load would run the command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def touch_command(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


def small_state(value: float = 1.0) -> dict:
    return {
        "model": {"w": torch.full((64, 64), value), "b": torch.arange(64.0)},
        "train_state": {"step": 3, "best_score": None},
        "config": {"model": {"d_model": 64}},
    }


def write_evil_checkpoint(path: Path, marker: Path) -> None:
    """A well-formed nmt checkpoint (right format version, intact CRCs) with one object
    inside that runs `touch marker` when unpickled."""
    state = small_state() | {
        "format_version": FORMAT_VERSION,
        "nmt_version": nmt_package.__version__,
    }
    state["config"] = {"model": Exploit(touch_command(marker))}
    torch.save(state, path)


def test_the_exploit_is_real(tmp_path: Path):
    """Without weights-only loading the file above runs its command: the tests below that
    find no marker show a refusal, not a harmless file."""
    marker = tmp_path / "pwned"
    write_evil_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


# --------------------------------------------------------------------------- full disk


class FullDiskFile:
    """A file on a disk that fills up after `room` bytes: later writes raise ENOSPC."""

    def __init__(self, f, room: int):
        self._f = f
        self._room = room

    def write(self, data) -> int:
        if len(data) > self._room:
            self._f.write(bytes(data[: self._room]))
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def full_disk_open(room: int):
    """`open` for the checkpoint module, on a disk with `room` bytes left."""

    def opener(*args):
        return FullDiskFile(open(*args), room)  # noqa: SIM115 (closed through the wrapper)

    return opener


def fail_at_fsync(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["first byte", "middle", "fsync"])
def test_a_full_disk_while_saving_keeps_the_previous_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch, where: str
):
    """ENOSPC where a real disk gives it: inside torch.save's writes (torch turns those into
    a RuntimeError of its own) or when the data is forced to disk."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, small_state(1.0))
    before = path.read_bytes()
    if where == "fsync":
        monkeypatch.setattr(ckpt.os, "fsync", fail_at_fsync)
    else:
        room = 0 if where == "first byte" else len(before) // 2
        monkeypatch.setattr(ckpt, "open", full_disk_open(room), raising=False)
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(path, small_state(2.0))
    monkeypatch.undo()
    assert str(err.value) == f"cannot write checkpoint {path}: No space left on device"
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind
    assert path.read_bytes() == before
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((64, 64), 1.0))


# --------------------------------------------------------------------------- damaged files


def test_a_flipped_bit_in_a_tensor_is_reported_not_loaded(tmp_path: Path):
    path = tmp_path / "step_3.pt"
    save_checkpoint(path, small_state())
    member = flip_one_bit(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"checkpoint {path} is corrupt: {member} does not match its CRC-32 checksum"
    )


def damaged_copies(good: bytes, seed: int, count: int):
    """(description, bytes) of `count` random damages: one flipped bit, or a cut."""
    rng = random.Random(seed)
    for _ in range(count):
        if rng.random() < 0.75:
            position, bit = rng.randrange(len(good)), 1 << rng.randrange(8)
            damaged = bytearray(good)
            damaged[position] ^= bit
            yield f"bit {bit:#04x} of byte {position} flipped", bytes(damaged)
        else:
            length = rng.randrange(len(good))
            yield f"cut to {length} bytes", good[:length]


def test_random_damage_is_refused_or_harmless_never_silently_wrong(tmp_path: Path):
    """400 random bit flips and truncations of one checkpoint: each load either raises
    CheckpointError naming the file, or returns exactly the saved data (the flip hit bytes
    nothing reads, like zip alignment padding). Any other outcome is a bug."""
    good_path = tmp_path / "good.pt"
    save_checkpoint(good_path, small_state())
    good = good_path.read_bytes()
    expected = load_checkpoint(good_path)
    path = tmp_path / "damaged.pt"
    refused = 0
    for description, data in damaged_copies(good, seed=6, count=400):
        path.write_bytes(data)
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            assert str(path) in str(exc), description
            refused += 1
            continue
        assert state.keys() == expected.keys(), description
        for key in ("model", "train_state", "config"):
            assert_same(state[key], expected[key], f"{description}: {key}")
    assert refused > 300  # nearly every byte of the file matters


def assert_same(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], where)
    else:
        assert a == b, where


# --------------------------------------------------------------------------- code, versions


def test_a_checkpoint_that_would_run_code_is_refused_by_load(tmp_path: Path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    write_evil_checkpoint(path, marker)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"refusing to load checkpoint {path}: it is not plain data")
    assert "posix.system" in str(err.value)  # what it would have called
    assert not marker.exists()


@pytest.mark.parametrize("version", [0, FORMAT_VERSION + 1, "1", True])
def test_another_format_version_names_the_version_found_and_the_one_supported(
    tmp_path: Path, version
):
    path = tmp_path / "other.pt"
    torch.save(small_state() | {"format_version": version, "nmt_version": "7.0"}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"checkpoint {path} has format version {version!r} (written by nmt 7.0); "
        f"this nmt ({nmt_package.__version__}) reads format version {FORMAT_VERSION} "
        f"(and older ones from {OLDEST_FORMAT_VERSION})"
    )


# --------------------------------------------------------------------------- leftovers


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_temporaries_of_dead_writers_are_removed_and_nothing_else(tmp_path: Path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    manager.save(small_state(), step=2, is_best=False)
    dead = [f".step_4.pt.{dead_pid()}.0123abcd.tmp", f".last.pt.{os.getpid()}.89abcdef.tmp"]
    alive = f".averaged.pt.{os.getppid()}.deadbeef.tmp"  # its writer still runs
    others = ["notes.tmp", ".step_4.pt.tmp", "step_2.pt.bak"]  # not ours: never touched
    for name in [*dead, alive, *others]:
        (tmp_path / name).write_bytes(b"half a checkpoint")
    removed = manager.remove_stale_temporaries()
    assert sorted(p.name for p in removed) == sorted(dead)
    assert sorted(os.listdir(tmp_path)) == sorted(["last.pt", "step_2.pt", alive, *others])


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory) -> Path:
    """A run directory after `nmt train` stopped at update 4: best.pt (its final validation),
    last.pt, step_2.pt, step_4.pt."""
    run = tiny_corpus.new_run(tmp_path_factory.mktemp("trained") / "run")
    result = nmt(*train_args(tiny_corpus, run, "train.max_updates=4"), cwd=run.parent)
    assert result.returncode == 0, result.stderr
    names = [p.name for p in visible_checkpoints(run)]
    assert names == ["best.pt", "last.pt", "step_2.pt", "step_4.pt"]
    return run


def copy_run(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


def write_other_version(path: Path, source: Path) -> None:
    state = load_checkpoint(source) | {"format_version": FORMAT_VERSION + 1}
    path.unlink(missing_ok=True)
    torch.save(state, path)


def save_averaged(path: Path, sources: list[Path]) -> None:
    """What `nmt average` writes: model weights, no optimizer/scheduler/scaler state."""
    averaged = average_checkpoints(sources)
    path.unlink(missing_ok=True)
    save_checkpoint(path, averaged)


def run_code_instead(bad: Path, marker: Path) -> None:
    bad.unlink()
    write_evil_checkpoint(bad, marker)


# Each case: how a good checkpoint is spoiled, and what the error says after its path.
BAD_FILES = {
    "truncated": (lambda bad, marker: cut_in_half(bad), " is truncated or corrupt"),
    "bit flip": (lambda bad, marker: flip_one_bit(bad), " is corrupt: "),
    "other version": (
        lambda bad, marker: write_other_version(bad, bad),
        f" has format version {FORMAT_VERSION + 1} ",
    ),
    "runs code": (run_code_instead, ": it is not plain data"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_translate_refuses_a_bad_checkpoint_with_one_line(trained, tmp_path, case):
    bad, marker = tmp_path / "model.pt", tmp_path / "pwned"
    shutil.copyfile(trained / "checkpoints" / "last.pt", bad)
    spoil, expected = BAD_FILES[case]
    spoil(bad, marker)
    (tmp_path / "in.de").write_text("Ein Hund läuft.\nZwei Männer.\n", encoding="utf-8")
    result = nmt("translate", bad, "-i", "in.de", "-o", "out.en", cwd=tmp_path)
    message = assert_clean_failure(result)
    assert f"{bad}{expected}" in message, message
    if case == "other version":
        assert f"reads format version {FORMAT_VERSION}" in message
    assert not marker.exists()
    assert not (tmp_path / "out.en").exists()  # no output begun from a bad model
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_train_resume_skips_unusable_checkpoints_and_runs_no_code(tiny_corpus, trained, tmp_path):
    """last.pt would run code and step_4.pt is an averaged checkpoint (no optimizer state):
    the rerun names both, resumes from step_2.pt and ends where the first run ended."""
    run = copy_run(trained, tmp_path)
    checkpoints, marker = run / "checkpoints", tmp_path / "pwned"
    (checkpoints / "last.pt").unlink()
    write_evil_checkpoint(checkpoints / "last.pt", marker)
    save_averaged(checkpoints / "step_4.pt", [trained / "checkpoints" / "step_4.pt"])
    result = nmt(*train_args(tiny_corpus, run, "train.max_updates=4"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    assert f"refusing to load checkpoint {checkpoints / 'last.pt'}" in warnings[0]
    assert f"cannot resume from {checkpoints / 'step_4.pt'}" in warnings[1]
    assert "optimizer" in warnings[1]
    assert f"resuming from {checkpoints / 'step_2.pt'} at update 2" in result.stderr
    assert not marker.exists()
    first_run = load_checkpoint(trained / "checkpoints" / "last.pt")
    assert_same_training_state(load_checkpoint(checkpoints / "last.pt"), first_run, "last.pt")


@pytest.mark.slow
def test_train_with_no_usable_checkpoint_stops_and_keeps_every_file(tiny_corpus, trained, tmp_path):
    """Starting afresh would silently throw the run away: the error lists every file and
    why it is unusable, and leaves them all as they were."""
    run = copy_run(trained, tmp_path)
    checkpoints, marker = run / "checkpoints", tmp_path / "pwned"
    (checkpoints / "last.pt").unlink()
    write_evil_checkpoint(checkpoints / "last.pt", marker)
    write_other_version(checkpoints / "step_4.pt", trained / "checkpoints" / "step_4.pt")
    cut_in_half(checkpoints / "step_2.pt")
    before = {p.name: p.read_bytes() for p in checkpoints.iterdir()}
    metrics = (run / "metrics.jsonl").read_bytes()
    result = nmt(*train_args(tiny_corpus, run, "train.max_updates=4"), cwd=tmp_path)
    assert_clean_failure(result)
    error = result.stderr[result.stderr.index("error: ") :]
    assert error.splitlines()[0] == f"error: no loadable checkpoint in {checkpoints}:"
    for name, reason in [
        ("last.pt", "it is not plain data"),
        ("step_4.pt", f"has format version {FORMAT_VERSION + 1}"),
        ("step_2.pt", "is truncated or corrupt"),
    ]:
        assert any(
            str(checkpoints / name) in line and reason in line for line in error.splitlines()
        )
    assert not marker.exists()
    assert {p.name: p.read_bytes() for p in checkpoints.iterdir()} == before
    assert (run / "metrics.jsonl").read_bytes() == metrics


@pytest.mark.slow
def test_a_real_write_error_while_averaging_keeps_the_old_output(trained, tmp_path):
    """No patching: the kernel refuses to grow any file past 100 kB (RLIMIT_FSIZE, EFBIG),
    the way a full disk or quota refuses a write."""
    steps = [trained / "checkpoints" / f"step_{n}.pt" for n in (2, 4)]
    output = tmp_path / "averaged.pt"
    save_checkpoint(output, small_state())  # an older, smaller output: must survive
    before = output.read_bytes()
    result = nmt("average", *steps, "-o", output, cwd=tmp_path, fault="fsize:100000")
    message = assert_clean_failure(result)
    assert message == f"error: cannot write checkpoint {output}: File too large"
    assert output.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".nmt-run")] == [
        "averaged.pt"
    ]  # no temporary file left behind
