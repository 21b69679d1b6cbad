"""Two-process DDP (gloo on the CPU, launched by torchrun) against one process.

Rank r of 2 takes batches[r::2] of each epoch's shuffled list; one process with
train.update_freq=2 takes two consecutive batches per update. The updates therefore see the
same pairs, and since the loss is normalised by the update's global token count, the two
runs must agree up to floating-point summation order.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _cli import assert_clean_failure, run_process

from nmt.checkpoint import load_checkpoint
from nmt.runtime import Runtime
from nmt.training.metrics import read_metrics
from nmt.training.trainer import Trainer

UPDATES = 3
COMMON = (
    "model.dropout=0",  # each rank has its own dropout stream: only dropout-free runs agree
    "train.warmup_updates=0",  # full lr from the first update, so parameters move visibly
    f"train.max_updates={UPDATES}",
    "train.save_every=1",
    "train.keep_last=10",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(args: list[str], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """torchrun in its own process group, so a hang kills every worker, not just torchrun."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        *args,
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1", "NMT_DIST_TIMEOUT": "120"}
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_accumulating_two_batches(tiny_corpus, tmp_path):
    assert tiny_corpus.num_batches() >= 2 * UPDATES  # all updates inside epoch 0
    ddp = tiny_corpus.new_run(tmp_path / "ddp")
    result = run_torchrun(
        ["-m", "nmt.cli", "train", *tiny_corpus.cli_args(ddp, *COMMON), "--no-evaluate"],
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on cpu fp32 x2 processes" in result.stderr

    single = tiny_corpus.new_run(tmp_path / "single")
    cfg = tiny_corpus.config(single, *COMMON, "train.update_freq=2")
    trainer = Trainer(cfg, Runtime(torch.device("cpu"), "fp32"), log=lambda message: None)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()

    moved = 0.0
    for step in range(1, UPDATES + 1):
        a = load_checkpoint(ddp / "checkpoints" / f"step_{step}.pt")
        b = load_checkpoint(single / "checkpoints" / f"step_{step}.pt")
        assert a["train_state"]["step"] == b["train_state"]["step"] == step
        assert a["model"].keys() == b["model"].keys()
        for name, value in a["model"].items():
            torch.testing.assert_close(value, b["model"][name], rtol=0, atol=1e-5, msg=name)
            moved = max(moved, float((value - initial[name]).abs().max()))
        for pid, state in a["optimizer"]["state"].items():
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(
                    state[key], b["optimizer"]["state"][pid][key], rtol=1e-4, atol=1e-8
                )
    assert moved > 100 * 1e-5  # the tolerance is far below what training changed

    # The gradient norm is taken after DDP's all-reduce: the global one, as in one process.
    ddp_log, single_log = (
        read_metrics(ddp / "metrics.jsonl"),
        read_metrics(single / "metrics.jsonl"),
    )
    assert [r["grad_norm"] for r in ddp_log if r["kind"] == "train"] == pytest.approx(
        [r["grad_norm"] for r in single_log if r["kind"] == "train"], rel=1e-4
    )
    # Only rank 0 writes: one record per update and the final validation (the run stops
    # before any valid_every), one set of checkpoints, no stray files.
    assert [(r["kind"], r["step"]) for r in ddp_log] == [
        *(("train", s) for s in range(1, UPDATES + 1)),
        ("valid", UPDATES),
    ]
    names = sorted(p.name for p in (ddp / "checkpoints").iterdir())
    steps = [f"step_{s}.pt" for s in range(1, UPDATES + 1)]
    assert names == sorted(["best.pt", "last.pt", *steps])
    assert sorted(p.name for p in ddp.iterdir()) == [
        "checkpoints",
        "config.yaml",
        "data",
        "metrics.jsonl",
    ]


# Rank 1 alone gets SIGINT right after update 2 (a signal reaches processes at different
# points of the loop). Every process must stop after the same update: if rank 1 stopped
# alone, rank 0 would wait forever in the next update's collective.
ONE_RANK_SIGNALLED = """
import signal

from nmt.cli import main
from nmt.training.trainer import Trainer

original = Trainer._after_update


def after_update(self, stats, window, validations):
    original(self, stats, window, validations)
    if self.rt.rank == 1 and self.state.step == 2:
        signal.raise_signal(signal.SIGINT)


Trainer._after_update = after_update
main()
"""


@pytest.mark.slow
def test_a_signal_to_one_process_stops_every_process_after_the_same_update(tiny_corpus, tmp_path):
    script = tmp_path / "one_rank_signalled.py"
    script.write_text(ONE_RANK_SIGNALLED)
    run = tiny_corpus.new_run(tmp_path / "run")
    result = run_torchrun(
        [
            str(script),
            "train",
            *tiny_corpus.cli_args(run, "train.max_updates=1000"),
            "--no-evaluate",
        ],
        cwd=tmp_path,
        timeout=300,
    )
    last = run / "checkpoints" / "last.pt"
    message = f"error: SIGINT received: saved {last}; run the same command again to resume"
    assert result.stderr.count(message) == 2, result.stderr[-3000:]  # one per process
    assert result.returncode != 0
    assert load_checkpoint(last)["train_state"]["step"] == 2
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2]


def test_a_failed_rendezvous_is_one_clear_line(tiny_corpus, tmp_path):
    """Rank 0 cannot open the rendezvous port (another program holds it): one error line that
    names the address and the cause, exit 2, no traceback."""
    run = tiny_corpus.new_run(tmp_path / "run")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
        result = run_process(
            "train",
            *tiny_corpus.cli_args(run, "train.max_updates=1"),
            "--no-evaluate",
            cwd=tmp_path,
            env={**env, "MASTER_PORT": str(port)},
        )
    assert_clean_failure(
        result,
        f"rank 0 of 2 could not join the other training processes at 127.0.0.1:{port}",
        "address already in use",
        "--master-port",
    )
