"""`train.tensorboard: true`: metrics.jsonl's numbers as TensorBoard scalars, read back with
TensorBoard's own EventAccumulator (the reader its dashboard uses) and compared with the
records of metrics.jsonl; a resumed run shows no step twice; a missing package is one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nmt.errors import NmtError
from nmt.runtime import Runtime
from nmt.training.metrics import read_metrics
from nmt.training.trainer import Trainer

CPU = Runtime(torch.device("cpu"), "fp32")
TENSORBOARD = ("train.tensorboard=true", "train.save_every=2", "train.keep_last=5")


def fit(tiny_corpus, run: Path, *overrides: str) -> None:
    Trainer(tiny_corpus.config(run, *TENSORBOARD, *overrides), CPU, log=lambda m: None).fit()


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard reads the directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def logged(run: Path) -> dict[str, list[tuple[int, float]]]:
    """The same tags from metrics.jsonl, values as float32 (what TensorBoard stores)."""
    table: dict[str, list[tuple[int, float]]] = {}
    for record in read_metrics(run / "metrics.jsonl"):
        if record["kind"] == "resume":
            continue
        for key, value in record.items():
            if key not in ("kind", "step", "time") and isinstance(value, (int, float)):
                tag = f"{record['kind']}/{key}"
                table.setdefault(tag, []).append((record["step"], float(np.float32(value))))
    return table


@pytest.fixture
def tensorboard():
    """The `tensorboard` extra (CI installs it; without it these tests are skipped)."""
    return pytest.importorskip("tensorboard")


def test_every_logged_number_is_a_scalar_at_its_step(tiny_corpus, tmp_path, tensorboard):
    run = tiny_corpus.new_run(tmp_path / "run")
    fit(tiny_corpus, run, "train.max_updates=4", "train.valid_every=2")
    got, expected = scalars(run / "tensorboard"), logged(run)
    assert {"train/loss", "train/lr", "valid/loss", "valid/ppl"} <= set(expected)
    assert got == expected
    assert [step for step, _ in got["train/loss"]] == [1, 2, 3, 4]
    assert [step for step, _ in got["valid/loss"]] == [2, 4]


def test_a_resumed_run_shows_no_step_twice(tiny_corpus, tmp_path, tensorboard):
    """A crash after update 4 whose checkpoints of updates 3-4 were lost: the run resumes
    from step_2.pt and redoes 3 and 4. The first session's events past update 2 (the
    validation at 4 that the resumed run, validating at 6, never repeats) are hidden, as
    their records were dropped from metrics.jsonl."""
    run = tiny_corpus.new_run(tmp_path / "run")
    fit(tiny_corpus, run, "train.max_updates=4")
    for name in ("last.pt", "step_4.pt"):
        (run / "checkpoints" / name).unlink()
    assert [step for step, _ in scalars(run / "tensorboard")["valid/loss"]] == [4]
    fit(tiny_corpus, run, "train.max_updates=6")
    got, expected = scalars(run / "tensorboard"), logged(run)
    assert [step for step, _ in got["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _ in got["valid/loss"]] == [6]
    assert got == expected
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_off_by_default_writes_nothing(tiny_corpus, tmp_path):
    run = tiny_corpus.new_run(tmp_path / "run")
    config = tiny_corpus.config(run, "train.max_updates=1")
    assert config.train.tensorboard is False
    Trainer(config, CPU, log=lambda m: None).fit()
    assert not (run / "tensorboard").exists()


def test_without_the_package_the_run_is_refused_naming_the_extra(
    tiny_corpus, tmp_path, monkeypatch
):
    """Refused before training starts, in one line that says what to install."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` fails
    run = tiny_corpus.new_run(tmp_path / "run")
    with pytest.raises(NmtError) as refused:
        Trainer(tiny_corpus.config(run, *TENSORBOARD), CPU, log=lambda m: None)
    assert str(refused.value) == (
        'train.tensorboard: true needs the optional extra: pip install "nmt[tensorboard]"'
    )
    assert not (run / "checkpoints").exists() and not (run / "tensorboard").exists()


def test_nmt_run_without_the_package_is_refused_before_downloading_or_preparing(
    cli_inline, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    run = tmp_path / "run"
    config = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
    result = cli_inline(
        "run", config, f"run_dir={run}", "train.tensorboard=true", f"data.mirror={tmp_path}"
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        'error: train.tensorboard: true needs the optional extra: pip install "nmt[tensorboard]"'
    )
    assert not run.exists()  # nothing downloaded, prepared or locked
