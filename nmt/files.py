"""Writing files safely: the one atomic write, the run-directory lock, and standard streams.

- `atomic_write` / `replace_atomically`: every file nmt writes goes to a temporary name that
  is unique per process (pid + random) in the destination's directory, is forced to disk,
  and is renamed over the destination only when complete. Two writers of one file never
  share a temporary, so the result is always one writer's whole file; a failure leaves the
  previous file as it was and no temporary behind; an OS error (a full disk, a read-only
  file system) becomes one `OutputError` naming the file. A destination that is a symbolic
  link is written through: its target gets the new content and the link stays.
- `run_lock`: one process at a time writes a run (or corpus, or eval) directory. The lock is
  `flock` on the directory itself, so a holder that dies (even by SIGKILL) releases it;
  who holds it (pid, host, command, since when) is written beside it for the message the
  next process gets.
- `keep_going_on_closed_pipes`: a log reader that goes away (`nmt train 2>&1 | head`) must
  not stop a command whose job is its files; the stream is sent to /dev/null instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from nmt.errors import NmtError, OutputError

# Temporary files of `atomic_write`: .<name>.<pid of the writer>.<8 hex digits>.tmp
TEMPORARY_NAME = re.compile(r"\..+\.(\d+)\.[0-9a-f]{8}\.tmp")
LOCK_INFO = ".nmt-lock.json"
LOCK_WAIT_SECONDS = 120.0  # how long `run_lock(wait=True)` waits before naming the holder


# --------------------------------------------------------------------------- atomic writes


def temporary_name(path: Path) -> Path:
    """A name next to `path` that no other process (or earlier attempt) uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_target(path: Path) -> Path:
    """The file a write to `path` must replace: the end of its symlink chain, if it is one
    (renaming over the link itself would turn it into a plain file)."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


@contextlib.contextmanager
def staged_file(
    path: Path, *, describe: str | None = None, through_links: bool = True
) -> Iterator[Path]:
    """Yield a unique temporary path; when the block ends cleanly, force it to disk and
    rename it over `path` (its symlink target; with `through_links=False` the name itself,
    for names that point at other files, such as a run's `last.pt`). On any failure the
    temporary is removed; OS errors become `OutputError("cannot write <describe or path>:
    <reason>")`."""
    target = write_target(path) if through_links else Path(path)
    tmp = temporary_name(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        _fsync_file(tmp)
        _keep_mode(target, tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"cannot write {describe or path}: {os_reason(exc, target)}") from exc
    finally:
        with contextlib.suppress(OSError):  # after a successful replace it no longer exists
            tmp.unlink()
    fsync_directory(target.parent)


def replace_atomically(
    path: Path,
    fill: Callable[[Path], None],
    *,
    describe: str | None = None,
    through_links: bool = True,
):
    """Let `fill` create the temporary file (e.g. `torch.save` into it), then rename it over
    `path`. Returns the file written (the symlink's target when `path` is a link and
    `through_links`, see `staged_file`)."""
    with staged_file(path, describe=describe, through_links=through_links) as tmp:
        fill(tmp)
    return write_target(path) if through_links else Path(path)


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w", *, describe: str | None = None) -> Iterator[IO]:
    """Open a unique temporary file for writing (text: UTF-8, "\\n" line ends) and rename it
    over `path` only when the block finishes cleanly."""
    binary = "b" in mode
    kwargs = {} if binary else {"encoding": "utf-8", "newline": "\n"}
    with (
        staged_file(path, describe=describe) as tmp,
        open(tmp, "xb" if binary else "x", **kwargs) as f,
    ):
        yield f


def os_reason(exc: OSError, target: Path | None = None) -> str:
    """The OS's reason ("No space left on device", "Read-only file system"), naming the
    directory when a parent is what failed, never the temporary file the user did not ask
    for."""
    reason = exc.strerror or str(exc)
    culprit = Path(exc.filename) if isinstance(exc.filename, str) else None
    if target is not None and culprit is not None and culprit in target.parents:
        if isinstance(exc, FileExistsError):  # mkdir of a parent that is a file
            return f"{culprit} exists and is not a directory"
        return f"{culprit}: {reason}"
    return reason


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_mode(target: Path, tmp: Path) -> None:
    """A replaced file keeps its permission bits (a new one gets the umask's)."""
    with contextlib.suppress(FileNotFoundError):
        mode = target.stat().st_mode & 0o7777
        if tmp.stat().st_mode & 0o7777 != mode:
            os.chmod(tmp, mode)


def fsync_directory(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError):
        _fsync_file(directory)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files and staging directories (named by `temporary_name`) in
    `directory` whose writing process is gone (killed, or the machine went down), which
    nothing else would ever remove; returns them. Call it holding the directory's lock,
    before this process writes there (a temporary with our own pid is then a reused pid's)."""
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for path in sorted(Path(directory).iterdir()):
            match = TEMPORARY_NAME.fullmatch(path.name)
            pid = int(match.group(1)) if match else None
            if pid is None or (pid != os.getpid() and pid_alive(pid)):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
            removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (this one included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


# --------------------------------------------------------------------------- directory lock


class DirectoryLocked(NmtError):
    """Another process holds the lock of a run, corpus or eval directory."""


_held: dict[Path, int] = {}  # directory -> its locked descriptor, in this process


@contextlib.contextmanager
def run_lock(directory: Path, *, command: str, wait: bool = False) -> Iterator[None]:
    """Hold the exclusive lock of `directory` (created if missing) for the block.

    Without `wait`, a held lock is refused at once: `DirectoryLocked` names the holder.
    With `wait`, it is waited for up to LOCK_WAIT_SECONDS (for short critical sections such
    as merging eval/results.json). Re-entrant within one process. Once it is held, the
    temporaries of dead writers in `directory` are removed. Directories created here are
    removed again at the end if nothing was written into them.
    """
    directory = Path(directory).absolute()
    if directory in _held:
        yield
        return
    created = _make_directory(directory)
    fd = _acquire(directory, wait=wait)
    _held[directory] = fd
    remove_stale_temporaries(directory)  # ours now: what dead writers left is garbage
    try:
        # Only a courtesy for the next process's message: a directory that cannot take it
        # (full, read-only) fails on the command's own first write, named as such.
        with contextlib.suppress(OutputError):
            _write_lock_info(directory, command)
        yield
    finally:
        with contextlib.suppress(OSError):
            (directory / LOCK_INFO).unlink()
        del _held[directory]
        os.close(fd)  # releases the flock
        for made in reversed(created):
            with contextlib.suppress(OSError):
                made.rmdir()  # only if still empty


def run_lock_if(condition: bool, directory: Path, *, command: str):
    """`run_lock` when `condition` holds (e.g. only rank 0 of a distributed run locks)."""
    return run_lock(directory, command=command) if condition else contextlib.nullcontext()


def _make_directory(directory: Path) -> list[Path]:
    missing = [p for p in [directory, *directory.parents] if not p.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {directory}: {os_reason(exc, directory)}") from exc
    return list(reversed(missing))  # outermost first


def _acquire(directory: Path, *, wait: bool) -> int:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise OutputError(f"cannot open {directory}: {os_reason(exc)}") from exc
    deadline = time.monotonic() + (LOCK_WAIT_SECONDS if wait else 0.0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= deadline:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise OutputError(f"cannot lock {directory}: {os_reason(exc)}") from exc
                raise DirectoryLocked(_locked_message(directory)) from None
        time.sleep(0.1)


def _write_lock_info(directory: Path, command: str) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    with atomic_write(directory / LOCK_INFO) as f:
        json.dump(info, f)


def _locked_message(directory: Path) -> str:
    try:
        info = json.loads((directory / LOCK_INFO).read_text(encoding="utf-8"))
        holder = f"pid {info['pid']} on {info['host']} ({info['command']}) since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        holder = "another process"
    return f"{directory} is in use by {holder}; wait for it to finish, or use another directory"


def command_line() -> str:
    """`nmt ARGS...` of this process, for the lock's holder line (cut to 200 characters)."""
    text = " ".join(["nmt", *sys.argv[1:]])
    return text if len(text) <= 200 else text[:197] + "..."


# --------------------------------------------------------------------------- standard streams


class _SurvivesClosedPipe:
    """A text stream whose writes, once its reader has gone (EPIPE), go to /dev/null."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._send_to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._send_to_devnull()

    def _send_to_devnull(self) -> None:
        # On the descriptor, so that every writer of it (C++ warnings, children) is covered;
        # the bytes still buffered then drain into /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def keep_going_on_closed_pipes(*, stdout: bool = True) -> None:
    """Let stderr (and stdout, unless writing it is the command's job) outlive its reader:
    after EPIPE the stream writes to /dev/null and the command carries on."""
    names = ("stdout", "stderr") if stdout else ("stderr",)
    for name in names:
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _SurvivesClosedPipe):
            setattr(sys, name, _SurvivesClosedPipe(stream))


def fill_closed_standard_descriptors(*, stdout_is_output: bool = False) -> None:
    """Point closed descriptors 0, 1, 2 (`nmt ... <&- >&- 2>&-`) at /dev/null.

    Otherwise the next file nmt opens would get that number, and whatever writes "stderr"
    (a C++ warning) would write into it. `sys.stdin` stays None, and so does `sys.stdout` of
    a command whose job is writing it (`stdout_is_output`), so that command can refuse; for
    any other command stdout is a log like stderr, and a closed one becomes /dev/null (a
    None `sys.stdout` was a traceback in rich's tables: `nmt prepare >&-`). A missing
    `sys.stderr` becomes /dev/null so messages meant for it do not fall back to stdout
    (where `print(file=None)` sends them)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the process
    if sys.stdout is None and not stdout_is_output:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the process


def file_key(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file or directory, to tell one under two names; None if it cannot
    be read (the caller that reads it names the missing file)."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
