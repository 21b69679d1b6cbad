"""nmt/files.py on a real file system: the one atomic write, the directory lock, and stdio.

Other processes are real processes (a second Python holding the lock, a child killed with
SIGKILL); a full disk and a read-only directory are real too (a small tmpfs or a read-only
bind mount in a private mount namespace, see `_mounts.py`), never patched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nmt.errors import OutputError
from nmt.files import (
    DirectoryLocked,
    atomic_write,
    remove_stale_temporaries,
    replace_atomically,
    run_lock,
    temporary_name,
)

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- atomic writes


def test_writing_to_a_symlink_writes_its_target_and_keeps_the_link(tmp_path: Path):
    target = tmp_path / "results" / "out.txt"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "latest.txt"
    link.symlink_to(Path("results") / "out.txt")  # relative, as `ln -s` users write them
    with atomic_write(link) as f:
        f.write("new\n")
    assert link.is_symlink() and os.readlink(link) == "results/out.txt"
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]  # no temporary


def test_a_dangling_symlink_gets_its_target_created(tmp_path: Path):
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "made.txt")
    replace_atomically(link, lambda tmp: tmp.write_bytes(b"x"))
    assert link.is_symlink() and (tmp_path / "made.txt").read_bytes() == b"x"


def test_two_writers_of_one_file_never_share_a_temporary(tmp_path: Path):
    """Interleaved as two processes would be: both open, both write, both finish. Each
    rename brings one writer's complete file, so the last one wins whole."""
    path = tmp_path / "out.txt"
    with atomic_write(path) as first, atomic_write(path) as second:
        first.write("first\n" * 1000)
        second.write("second\n" * 10)
    assert path.read_text() == "first\n" * 1000  # the outer block finished last
    assert os.listdir(tmp_path) == ["out.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path):
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    path.chmod(0o640)
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write("half")
        raise RuntimeError("stopped")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["out.txt"]
    with atomic_write(path) as f:
        f.write("new\n")
    assert path.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its permissions


def test_stale_temporaries_are_those_of_dead_writers(tmp_path: Path):
    dead = _dead_pid()
    stale_file = tmp_path / f".out.txt.{dead}.0123abcd.tmp"
    stale_dir = tmp_path / f".data.{dead}.89abcdef.tmp"
    alive = tmp_path / f".out.txt.{os.getppid()}.deadbeef.tmp"  # its writer still runs
    others = [tmp_path / "notes.tmp", tmp_path / ".out.txt.tmp", tmp_path / "out.txt"]
    for path in (stale_file, alive, *others):
        path.write_text("x")
    (stale_dir / "sub").mkdir(parents=True)
    assert remove_stale_temporaries(tmp_path) == sorted([stale_dir, stale_file])
    assert sorted(tmp_path.iterdir()) == sorted([alive, *others])
    assert temporary_name(tmp_path / "a").name.startswith(f".a.{os.getpid()}.")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --------------------------------------------------------------------------- directory lock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from nmt.files import run_lock
    with run_lock(sys.argv[1], command="nmt train holder.yaml"):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def _holder(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.readline() == "locked\n"
    return proc


def test_a_locked_directory_is_refused_naming_the_holder(tmp_path: Path):
    run = tmp_path / "runs" / "x"
    holder = _holder(run)
    try:
        with pytest.raises(DirectoryLocked) as err, run_lock(run, command="nmt train"):
            pass
        message = str(err.value)
        assert f"pid {holder.pid} on " in message, message
        assert "(nmt train holder.yaml) since 20" in message, message
        assert message.startswith(f"{run} is in use by "), message
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL released it (flock dies with its holder), and the new holder names itself.
    with run_lock(run, command="nmt train again"):
        info = (run / ".nmt-lock.json").read_text()
        assert f'"pid": {os.getpid()}' in info and "nmt train again" in info
        with run_lock(run, command="nested"):  # re-entrant within one process
            pass
    assert os.listdir(run) == []  # the holder's note goes with the lock


def test_a_lock_leaves_no_directory_it_created_for_nothing(tmp_path: Path):
    with run_lock(tmp_path / "runs" / "new", command="nmt prepare"):
        assert (tmp_path / "runs" / "new").is_dir()
    assert os.listdir(tmp_path) == []


def test_taking_a_lock_removes_what_dead_writers_left(tmp_path: Path):
    stale = tmp_path / f".config.yaml.{_dead_pid()}.0123abcd.tmp"  # a writer killed mid-write
    stale.write_text("half")
    with run_lock(tmp_path, command="nmt train"):
        assert not stale.exists()


def test_waiting_for_a_lock_gives_up_naming_the_holder(tmp_path: Path, monkeypatch):
    import nmt.files

    monkeypatch.setattr(nmt.files, "LOCK_WAIT_SECONDS", 0.3)
    holder = _holder(tmp_path)
    try:
        with (
            pytest.raises(DirectoryLocked, match=f"pid {holder.pid} "),
            run_lock(tmp_path, command="nmt evaluate", wait=True),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


# --------------------------------------------------------------------------- full and read-only


WRITE_AND_REPORT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from nmt.errors import OutputError
    from nmt.files import atomic_write
    d = Path(sys.argv[1])
    try:
        with atomic_write(d / "out.txt") as f:
            f.write("x" * 200_000)
    except OutputError as exc:
        print(exc)
    print(sorted(os.listdir(d)), (d / "out.txt").read_text())
    """
)


def test_a_full_disk_is_one_error_and_leaves_the_old_file(tmp_path: Path):
    from _mounts import run_in_mounts

    prelude = "(d / 'out.txt').write_text('old')\n"
    script = WRITE_AND_REPORT.replace("try:", prelude + "try:", 1)
    result = run_in_mounts([sys.executable, "-c", script, tmp_path], tmpfs=tmp_path, size="64k")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"cannot write {tmp_path}/out.txt: No space left on device",
        "['out.txt'] old",
    ]


def test_a_read_only_directory_is_one_error_naming_it(tmp_path: Path):
    from _mounts import run_in_mounts

    (tmp_path / "out.txt").write_text("old")
    script = [sys.executable, "-c", WRITE_AND_REPORT, tmp_path]
    result = run_in_mounts(script, read_only=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"cannot write {tmp_path}/out.txt: Read-only file system",
        "['out.txt'] old",
    ]


def test_output_error_is_an_nmt_error():
    from nmt.errors import NmtError

    assert issubclass(OutputError, NmtError) and OutputError.exit_code == 2
