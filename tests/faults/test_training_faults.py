"""Training under faults: `nmt train` is SIGKILLed, runs out of disk, finds corrupt files.

Every run is a real `nmt train` process (see _trainkit.py / _killer.py) on a tiny CPU run
of 10 updates that saves every 2 updates and validates at update 6. The reference is one
uninterrupted run through the plain entry point (`python -m nmt.cli train`); after any
fault, running the same command again until it succeeds must give the reference's files
bit for bit: model, optimizer, scheduler, RNG streams, progress, best.pt and metrics.jsonl.
After every crash, each checkpoint file a resume could pick up must load (none is ever
half-written), and after the final run no temporary file may be left anywhere.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from _trainkit import (
    assert_clean_failure,
    assert_same_training_state,
    cut_in_half,
    flip_one_bit,
    fork_server,
    fresh_nmt,
    leftovers,
    logged,
    nmt,
    train_args,
    visible_checkpoints,
)

from nmt.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

SIGKILL = -9  # returncode of a process killed by signal 9


@dataclass(frozen=True)
class Reference:
    """The files of the uninterrupted run."""

    checkpoints: dict[str, dict]  # file name -> loaded state
    metrics: list[tuple]
    checkpoint_bytes: int  # size of one checkpoint file


@pytest.fixture(scope="module")
def reference(tiny_corpus, tmp_path_factory) -> Reference:
    fork_server()  # starts importing now, alongside the reference run
    root = tmp_path_factory.mktemp("reference")
    run = tiny_corpus.new_run(root / "run")
    result = fresh_nmt(*train_args(tiny_corpus, run), cwd=root)
    assert result.returncode == 0, result.stderr
    files = visible_checkpoints(run)
    assert [p.name for p in files] == ["best.pt", "last.pt", "step_10.pt", "step_8.pt"]
    return Reference(
        checkpoints={p.name: load_checkpoint(p) for p in files},
        metrics=logged(run),
        checkpoint_bytes=files[0].stat().st_size,
    )


def assert_like_reference(run: Path, reference: Reference) -> None:
    """The run's files are the uninterrupted run's, and nothing half-done is left."""
    files = visible_checkpoints(run)
    assert sorted(p.name for p in files) == sorted(reference.checkpoints)
    for path in files:
        assert_same_training_state(load_checkpoint(path), reference.checkpoints[path.name], path)
    assert logged(run) == reference.metrics
    assert leftovers(run) == []


def assert_consistent_after_crash(run: Path) -> None:
    """What a crash may leave: fewer files, never a broken one, and best.pt agreeing with
    last.pt about the best score (else best.pt would not be the best checkpoint)."""
    states = {p.name: load_checkpoint(p) for p in visible_checkpoints(run)}
    last = states.get("last.pt")
    if last is not None and last["train_state"]["best_score"] is not None:
        assert "best.pt" in states, "last.pt has a best score but best.pt is missing"
        best_score = states["best.pt"]["train_state"]["best_score"]
        assert best_score == last["train_state"]["best_score"], "best.pt is stale"


def resume_point(run: Path) -> str | None:
    """Where a resume must start after a crash (every file loads, see above): last.pt, the
    commit point of a save, else the newest step file (the first save's, if it got that far)."""
    checkpoints = run / "checkpoints"
    steps = sorted(checkpoints.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    candidates = [p for p in [checkpoints / "last.pt", *steps[::-1]] if p.is_file()]
    if not candidates:
        return None
    step = load_checkpoint(candidates[0])["train_state"]["step"]
    return f"resuming from {candidates[0]} at update {step}"


def rerun_to_the_end(tiny_corpus, run: Path, reference: Reference) -> str:
    """Run the same command again, without a fault: it must finish like the reference."""
    had_checkpoint = bool(visible_checkpoints(run))
    result = nmt(*train_args(tiny_corpus, run), cwd=run.parent)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert ("resuming from" in result.stderr) == had_checkpoint, result.stderr
    assert_like_reference(run, reference)
    return result.stderr


def rerun_after_a_crash(tiny_corpus, run: Path, reference: Reference) -> None:
    """`rerun_to_the_end`, which must resume from the last complete save."""
    expected = resume_point(run)
    stderr = rerun_to_the_end(tiny_corpus, run, reference)
    if expected is not None:
        assert expected in stderr, stderr


# --------------------------------------------------------------------------- kill -9


# Each seed draws where two kinds of crash strike; the three seeds cover all six kinds.
# Positions are drawn from ranges every run reaches, first run or resumed one.
KINDS_BY_SEED = {1: ("write", "link"), 2: ("rename", "metrics"), 3: ("update", "timer")}


def draw_fault(kind: str, rng: random.Random, reference: Reference) -> dict:
    """nmt() arguments for one crash of `kind` at a random point (see _killer.py)."""
    if kind == "write":  # inside the 1st or 2nd checkpoint file, at a random byte (files
        # differ by a few bytes: stay clear of the end, which is only the zip's directory)
        at = rng.randrange(reference.checkpoint_bytes - 4096)
        return {"fault": f"write:{rng.randint(1, 2)}:{at}"}
    if kind == "rename":  # a complete temporary file, not yet under its name
        return {"fault": f"rename:{rng.randint(1, 3)}"}
    if kind == "link":  # a step file saved, last.pt not yet pointing at it
        return {"fault": f"link:{rng.randint(1, 2)}"}
    if kind == "metrics":  # half a metrics.jsonl line
        return {"fault": f"metrics:{rng.randint(1, 5)}"}
    if kind == "update":  # an update done in memory, not logged or saved
        return {"fault": f"update:{rng.randint(1, 5)}"}
    return {"kill_after": rng.uniform(0.2, 1.5)}  # "timer": from outside, wherever it lands


@pytest.mark.parametrize("seed", sorted(KINDS_BY_SEED))
def test_kill_9_at_random_points_then_the_same_command_finishes_like_an_uninterrupted_run(
    tiny_corpus, reference, tmp_path, seed
):
    rng = random.Random(seed)
    run = tiny_corpus.new_run(tmp_path / "run")
    for kind in KINDS_BY_SEED[seed]:
        fault = draw_fault(kind, rng, reference)
        result = nmt(*train_args(tiny_corpus, run), cwd=tmp_path, **fault)
        where = f"seed {seed}, {fault}"
        if kind == "timer":
            assert result.returncode in (SIGKILL, 0), f"{where}: {result.stderr}"
        else:
            assert result.returncode == SIGKILL, f"{where}: the fault never struck"
        if kind == "write":  # the crash hit a checkpoint in the middle of its write
            assert leftovers(run / "checkpoints"), where
        assert_consistent_after_crash(run)
    rerun_after_a_crash(tiny_corpus, run, reference)


def test_a_crash_before_the_first_checkpoint_starts_afresh_without_stale_metrics(
    tiny_corpus, reference, tmp_path
):
    """Killed in the middle of metrics line 2, before the first save (update 2): the rerun
    starts from scratch, and metrics.jsonl must not keep the dead run's records."""
    run = tiny_corpus.new_run(tmp_path / "run")
    killed = nmt(*train_args(tiny_corpus, run), cwd=tmp_path, fault="metrics:2")
    assert killed.returncode == SIGKILL
    assert visible_checkpoints(run) == []
    rerun_after_a_crash(tiny_corpus, run, reference)


def test_a_crash_while_a_best_checkpoint_is_committed_keeps_best_pt_right(
    tiny_corpus, reference, tmp_path
):
    """The save at update 6 (the only validation) points last.pt and best.pt at step_6.pt:
    hard links 3 and 4 of the run. A crash between the two must not lose best.pt."""
    run = tiny_corpus.new_run(tmp_path / "run")
    killed = nmt(*train_args(tiny_corpus, run), cwd=tmp_path, fault="link:4")
    assert killed.returncode == SIGKILL
    assert_consistent_after_crash(run)
    rerun_after_a_crash(tiny_corpus, run, reference)


# --------------------------------------------------------------------------- full disk


def test_a_full_disk_while_saving_stops_cleanly_and_keeps_the_previous_checkpoint(
    tiny_corpus, reference, tmp_path
):
    """The second save (update 4) hits ENOSPC half-way through its file."""
    run = tiny_corpus.new_run(tmp_path / "run")
    checkpoints = run / "checkpoints"
    fault = f"enospc:2:{reference.checkpoint_bytes // 2}"
    failed = nmt(*train_args(tiny_corpus, run), cwd=tmp_path, fault=fault)
    message = assert_clean_failure(failed)
    assert message == (
        f"error: cannot write checkpoint {checkpoints / 'step_4.pt'}: No space left on device; "
        "training stopped at update 4 (earlier checkpoints are intact: fix the cause, then run "
        "the same command again to resume)"
    )
    assert leftovers(run) == []
    assert [p.name for p in visible_checkpoints(run)] == ["last.pt", "step_2.pt"]
    assert load_checkpoint(checkpoints / "last.pt")["train_state"]["step"] == 2
    stderr = rerun_to_the_end(tiny_corpus, run, reference)
    assert f"resuming from {checkpoints / 'last.pt'} at update 2" in stderr


def test_a_full_disk_while_logging_metrics_stops_cleanly(tiny_corpus, tmp_path):
    run = tiny_corpus.new_run(tmp_path / "run")
    failed = nmt(*train_args(tiny_corpus, run), cwd=tmp_path, fault="enospc-metrics:3")
    message = assert_clean_failure(failed)
    assert str(run / "metrics.jsonl") in message and "No space left on device" in message


# --------------------------------------------------------------------------- bad files


def test_resume_skips_truncated_and_bit_flipped_checkpoints_with_a_warning(
    tiny_corpus, reference, tmp_path
):
    """Killed after update 7 (saved: step_4.pt, step_6.pt = last.pt = best.pt). Then last.pt
    is cut short and step_6.pt gets one flipped bit: the rerun names both, resumes from
    step_4.pt and still ends bit for bit like the reference."""
    run = tiny_corpus.new_run(tmp_path / "run")
    checkpoints = run / "checkpoints"
    assert nmt(*train_args(tiny_corpus, run), cwd=tmp_path, fault="update:7").returncode == -9
    assert [p.name for p in visible_checkpoints(run)] == [
        "best.pt",
        "last.pt",
        "step_4.pt",
        "step_6.pt",
    ]
    cut_in_half(checkpoints / "last.pt")
    flip_one_bit(checkpoints / "step_6.pt")
    stderr = rerun_to_the_end(tiny_corpus, run, reference)
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, stderr
    assert str(checkpoints / "last.pt") in warnings[0] and "truncated" in warnings[0]
    assert str(checkpoints / "step_6.pt") in warnings[1] and "corrupt" in warnings[1]
    assert f"resuming from {checkpoints / 'step_4.pt'} at update 4" in stderr
