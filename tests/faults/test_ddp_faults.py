"""Fault injection in two-process DDP (gloo on the CPU): a rank dies or freezes mid-training.

A rank is killed with SIGKILL (the OOM killer, a lost node) or stopped with SIGSTOP (a hung
node) right after update 2. The survivor must not wait forever in its next collective: it
exits non-zero with one `error: ...` line, no traceback, within seconds, and torchrun exits
non-zero too. A killed rank closes its sockets, so gloo notices at once; a frozen one keeps
them open, so only the process-group timeout (NMT_DIST_TIMEOUT) can. The frozen case runs
without torchrun, as one rank of a multi-node job sees a peer on another node: nothing but
its own error handling stops it. A hard timeout on every launch turns a hang into a failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HARD_TIMEOUT = 120  # seconds for a whole launch, start-up included: a hang fails the test
PROMPT = 30  # seconds from the fault to the survivor's exit that count as "no hang"


# `RANK` and `SIGNAL` are filled in. After update 2 that rank writes the time, then sends
# itself the signal: SIGKILL gives no handler, no cleanup and no goodbye to the peer.
FAULTY_RANK = """
import os
import signal
import time
from pathlib import Path

from nmt.cli import main
from nmt.training.trainer import Trainer

original = Trainer._after_update


def after_update(self, stats, window, validations):
    original(self, stats, window, validations)
    if self.rt.rank == {rank} and self.state.step == 2:
        Path("fault_time").write_text(str(time.time()))
        os.kill(os.getpid(), signal.{signal})


Trainer._after_update = after_update
main()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def faulty_script(tmp_path: Path, *, rank: int, signal_name: str) -> Path:
    script = tmp_path / f"rank{rank}_{signal_name}.py"
    script.write_text(FAULTY_RANK.format(rank=rank, signal=signal_name))
    return script


def train_args(tiny_corpus, tmp_path: Path) -> list[str]:
    run = tiny_corpus.new_run(tmp_path / "run")
    return ["train", *tiny_corpus.cli_args(run, "train.max_updates=1000"), "--no-evaluate"]


def start(command: list[str], *, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """A process in its own session, so that its whole group can be killed on a hang."""
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=os.environ | {"OMP_NUM_THREADS": "1"} | (env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, deadline: float, *others: subprocess.Popen):
    """(returncode, stderr, exit time) of `proc`; fails the test if it outlives `deadline`.
    Whatever happens, `proc` and `others` (a frozen peer) are killed afterwards."""
    try:
        _, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
        return proc.returncode, err, time.time()
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"hang: still running {HARD_TIMEOUT} s after the launch:\n{err[-4000:]}")
    finally:
        for other in others:
            with_group_killed(other)


def with_group_killed(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def seconds_since_fault(tmp_path: Path, exited: float) -> float:
    fault = tmp_path / "fault_time"
    assert fault.exists(), "the faulty rank never reached update 2"
    return exited - float(fault.read_text())


def assert_one_clear_error(stderr: str, *fragments: str) -> None:
    """Exactly one `error:` line from the survivor and none of its traceback."""
    errors = [line for line in stderr.splitlines() if "error: " in line]
    assert len(errors) == 1, stderr[-4000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert "RuntimeError" not in stderr, stderr[-4000:]
    assert "[rank0]: Traceback" not in stderr and "[rank1]: Traceback" not in stderr, stderr


@pytest.mark.slow
def test_torchrun_fails_fast_when_one_rank_is_killed(tiny_corpus, tmp_path):
    script = faulty_script(tmp_path, rank=1, signal_name="SIGKILL")
    torchrun = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"),
        *("--master-addr", "127.0.0.1", "--master-port", str(free_port())),
    ]
    proc = start([*torchrun, str(script), *train_args(tiny_corpus, tmp_path)], cwd=tmp_path)
    code, stderr, exited = finish(proc, time.monotonic() + HARD_TIMEOUT)

    assert code != 0, stderr[-4000:]
    assert seconds_since_fault(tmp_path, exited) < PROMPT
    assert "exitcode  : -9" in stderr  # torchrun names the killed rank as the root cause
    # Rank 0 left through its error path, not killed by the SIGTERM torchrun sends the
    # survivors of a failed worker (-15), which races the survivor's own error.
    assert "exitcode  : 2 " in stderr, stderr[-4000:]
    # torchrun prints its own report (with its own traceback); rank 0 prints one line.
    survivor = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert survivor and "rank 0 of 2" in survivor[0], stderr[-4000:]
    assert "RuntimeError: [" not in stderr and "[rank0]: Traceback" not in stderr, stderr[-4000:]


def launch_ranks(script: Path, args: list[str], *, cwd: Path, env: dict | None = None):
    """Both ranks started directly, without torchrun: nothing but the survivor's own error
    handling can stop it, as for one rank of a multi-node job whose peer is on another node."""
    port = str(free_port())
    ranks = []
    for rank in (0, 1):
        rank_env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2"}
        rank_env |= {"RANK": str(rank), "LOCAL_RANK": str(rank)} | (env or {})
        ranks.append(start([sys.executable, str(script), *args], cwd=cwd, env=rank_env))
    return ranks


@pytest.mark.slow
def test_a_frozen_rank_times_out_after_nmt_dist_timeout(tiny_corpus, tmp_path):
    """SIGSTOP keeps the peer's sockets open: only the process-group timeout can notice."""
    script = faulty_script(tmp_path, rank=1, signal_name="SIGSTOP")
    timeout = 10  # start-up (torch import, rendezvous) must fit in it on a busy machine
    rank0, rank1 = launch_ranks(
        script,
        train_args(tiny_corpus, tmp_path),
        cwd=tmp_path,
        env={"NMT_DIST_TIMEOUT": str(timeout)},
    )
    code, stderr, exited = finish(rank0, time.monotonic() + HARD_TIMEOUT, rank1)

    assert code != 0
    assert timeout - 1 <= seconds_since_fault(tmp_path, exited) < timeout + PROMPT
    assert_one_clear_error(stderr, "rank 0 of 2", f"{timeout} s", "NMT_DIST_TIMEOUT")
