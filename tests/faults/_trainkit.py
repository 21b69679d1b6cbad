"""Helpers of the training and checkpoint fault tests: `nmt` in a subprocess, with a fault.

Every run is a separate `nmt` process, forked by `_killer.py --serve` (which imported torch
once) with at most one injected fault, on the tiny corpus of tests/plugins/tiny_corpus.py:
tiny model, CPU, one thread, fp32, so the same command gives the same bits every time.
`fresh_nmt` runs the plain entry point instead (`python -m nmt.cli`), seconds slower.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

from _shared import assert_equal_tree

KILLER = Path(__file__).resolve().with_name("_killer.py")
HARD_TIMEOUT = 120  # seconds for one run: a hang fails the test instead of blocking it

# A short run that still crosses an epoch (7 batches), restores dropout's RNG stream, saves
# every 2 updates (keeping 2 step files), and validates once, at update 6: best.pt is
# written only there, so a best.pt lost or stale after a crash shows at the end of the run.
FAULT_RUN = (
    "model.dropout=0.1",
    "train.max_updates=10",
    "train.warmup_updates=4",
    "train.save_every=2",
    "train.keep_last=2",
    "train.valid_every=6",
    "train.best_metric=loss",
)
# Training state that must come out bitwise equal (RNG included) after any resume.
EXACT_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng")
PROGRESS_KEYS = ("step", "epoch", "position", "best_score", "bad_validations")
LOGGED_KEYS = ("kind", "step", "epoch", "loss", "nll", "ppl", "lr", "grad_norm", "padding")


class ForkServer:
    """Client of `_killer.py --serve`: every `nmt` run is a child forked from one process
    that imported torch and nmt once, so a run costs its work, not seconds of imports."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(KILLER), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=os.environ | {"OMP_NUM_THREADS": "1"},
            text=True,
        )
        self._ready = False  # its imports run meanwhile: `start` waits for them

    def _read(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server died (exit status {self._proc.wait()})")
        return json.loads(line)

    def start(self, args: list[str], *, cwd: Path, fault: str, outputs: Path) -> int:
        """Fork a child running `nmt ARGS`; returns its pid. `finish` must follow."""
        if not self._ready:
            self._ready = self._read()["ready"]
        request = {
            "args": [str(a) for a in args],
            "cwd": str(cwd),
            "env": {"OMP_NUM_THREADS": "1"},
            "fault": fault,
            "stdout": str(outputs.with_suffix(".out")),
            "stderr": str(outputs.with_suffix(".err")),
        }
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        return self._read()["pid"]

    def finish(self, pid: int, args: list[str], outputs: Path, timeout: float):
        """Wait for the child (SIGKILL it after `timeout` s: a hang fails, never blocks)."""
        hung = threading.Event()

        def kill_the_hung_child() -> None:
            hung.set()
            _kill_quietly(pid)

        watchdog = threading.Timer(timeout, kill_the_hung_child)
        watchdog.start()
        try:
            returncode = self._read()["returncode"]
        finally:
            watchdog.cancel()
        # Its SIGKILL must not pass for the one a test injected.
        assert not hung.is_set(), f"nmt {' '.join(map(str, args))} hung: killed after {timeout} s"
        out = outputs.with_suffix(".out").read_text(encoding="utf-8")
        err = outputs.with_suffix(".err").read_text(encoding="utf-8")
        return subprocess.CompletedProcess(["nmt", *args], returncode, out, err)

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(timeout=30)


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


_server: ForkServer | None = None


def fork_server() -> ForkServer:
    """The one fork server of this pytest process, started on first use (call it early:
    it returns at once and the server imports torch while the caller goes on)."""
    global _server
    if _server is None:
        _server = ForkServer()
        atexit.register(_server.close)
    return _server


_runs = itertools.count()


def nmt(
    *args: str,
    cwd: Path,
    fault: str = "",
    kill_after: float | None = None,
    timeout: float = HARD_TIMEOUT,
) -> subprocess.CompletedProcess:
    """`nmt ARGS...` as a separate process, with the fault `fault` (see _killer.py) if given,
    or SIGKILLed from outside `kill_after` seconds after it started."""
    server = fork_server()
    outputs = cwd / f".nmt-run-{next(_runs)}"
    pid = server.start(list(args), cwd=cwd, fault=fault, outputs=outputs)
    killer = threading.Timer(kill_after or 0, _kill_quietly, (pid,))
    if kill_after is not None:
        killer.start()
    try:
        return server.finish(pid, list(args), outputs, timeout)
    finally:
        killer.cancel()


def fresh_nmt(*args: str, cwd: Path, timeout: float = HARD_TIMEOUT):
    """`python -m nmt.cli ARGS...` in a new interpreter: the plain entry point, no fork."""
    return subprocess.run(
        [sys.executable, "-m", "nmt.cli", *args],
        cwd=cwd,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_args(corpus, run_dir: Path, *extra: str) -> list[str]:
    """`train CONFIG OVERRIDES... --no-evaluate` for a FAULT_RUN in `run_dir`."""
    return ["train", *corpus.cli_args(run_dir, *FAULT_RUN, *extra), "--no-evaluate"]


def assert_clean_failure(result: subprocess.CompletedProcess) -> str:
    """Non-zero exit and no traceback; stderr ends with the `error: ...` message (its first
    line, then indented detail lines if any). Returns the message."""
    assert result.returncode not in (0, -9), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.rstrip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert starts, result.stderr
    message = lines[starts[-1] :]
    assert all(line.startswith(" ") for line in message[1:]), result.stderr
    return "\n".join(message)


def leftovers(directory: Path) -> list[str]:
    """Temporary files anywhere under `directory` (what a half-finished write leaves)."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*.tmp"))


def visible_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoint files a user or a resume would pick up (temporaries excluded)."""
    directory = run_dir / "checkpoints"
    return sorted(directory.glob("[!.]*.pt")) if directory.is_dir() else []


def assert_same_training_state(a: dict, b: dict, where: str) -> None:
    for key in EXACT_KEYS:
        assert_equal_tree(a[key], b[key], f"{where}: {key}")
    progress = [{k: state["train_state"][k] for k in PROGRESS_KEYS} for state in (a, b)]
    assert progress[0] == progress[1], where


def logged(run_dir: Path) -> list[tuple]:
    """metrics.jsonl without its wall-clock fields and resume marks (a resumed run has
    them, an uninterrupted one not); every line must be a whole record."""
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    return [tuple(r.get(k) for k in LOGGED_KEYS) for r in records if r["kind"] != "resume"]


# --------------------------------------------------------------------------- damage


def cut_in_half(path: Path) -> None:
    """Replace `path` by its first half, as a new file (last.pt shares step_N.pt's inode)."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 2])


def flip_one_bit(path: Path) -> str:
    """Flip one bit in the middle of the largest member of the zip archive torch.save wrote
    (the bytes of the biggest tensor), as a new file; returns the member's name. The file
    stays a well-formed archive: only the member's CRC-32 can tell."""
    with zipfile.ZipFile(path) as archive:
        member = max(archive.infolist(), key=lambda m: m.file_size)
    data = bytearray(path.read_bytes())
    # The local header: 30 bytes, then the name and extra field, whose lengths are at 26.
    name_len, extra_len = struct.unpack_from("<HH", data, member.header_offset + 26)
    start = member.header_offset + 30 + name_len + extra_len
    data[start + member.file_size // 2] ^= 0x10
    path.unlink()
    path.write_bytes(bytes(data))
    return member.filename
