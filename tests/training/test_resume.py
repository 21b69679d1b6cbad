"""Resuming a run: which settings may change, on what data, from which checkpoint.

Every config key either takes effect on resume or is refused with its old and new value
(nmt.training.resume); a run never resumes on another tokenizer or other prepared data (the
checkpoint's fingerprint); a checkpoint that loads but is malformed is skipped for the
previous one, as a corrupt one is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from _cli import assert_clean_failure, run_process

from nmt.checkpoint import load_checkpoint, read_model_checkpoint, save_checkpoint
from nmt.data.prepare import prepare
from nmt.errors import CheckpointError, DataError, TrainingError
from nmt.runtime import Runtime
from nmt.training.resume import (
    FIXED_FOR_A_RUN,
    TAKES_EFFECT_ON_RESUME,
    all_config_keys,
)
from nmt.training.trainer import Trainer, TrainResult

CPU = Runtime(torch.device("cpu"), "fp32")


def fit(cfg, logs: list[str] | None = None) -> TrainResult:
    log = logs.append if logs is not None else (lambda message: None)
    return Trainer(cfg, CPU, log=log).fit()


def copy_run(trained_run: Path, tmp_path: Path) -> Path:
    """A private copy of the 3-update run (step_1..3.pt, last.pt)."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def checkpoint_files(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


# --------------------------------------------------------------------------- classification


def test_every_config_key_is_classified_once():
    assert TAKES_EFFECT_ON_RESUME.isdisjoint(FIXED_FOR_A_RUN)
    assert all_config_keys() == TAKES_EFFECT_ON_RESUME | FIXED_FOR_A_RUN
    # What the issue names on each side.
    for key in ("train.lr", "train.warmup_updates", "train.weight_decay", "model.dropout"):
        assert key in FIXED_FOR_A_RUN
    for key in ("train.max_updates", "train.max_minutes", "train.patience", "train.keep_last"):
        assert key in TAKES_EFFECT_ON_RESUME


# --------------------------------------------------------------------------- settings


def test_changed_training_settings_are_refused_with_every_key_old_and_new(
    tiny_corpus, trained_run, tmp_path
):
    run = copy_run(trained_run, tmp_path)
    before = checkpoint_files(run)
    changes = ("train.lr=1e-3", "train.warmup_updates=7", "model.dropout=0.2")
    with pytest.raises(TrainingError) as error:
        fit(tiny_corpus.config(run, "train.max_updates=5", *changes))
    message = str(error.value)
    assert "train.lr 0.002 -> 0.001" in message
    assert "train.warmup_updates 50 -> 7" in message
    assert "model.dropout 0.1 -> 0.2" in message
    assert "fresh run directory" in message and "train.init_from" in message
    assert "train.max_updates" not in message  # that one takes effect
    assert checkpoint_files(run) == before
    assert load_checkpoint(run / "checkpoints" / "last.pt")["train_state"]["step"] == 3


def test_a_refused_resume_leaves_config_yaml_as_what_ran(tiny_corpus, trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    (run / "config.yaml").write_text(
        yaml.safe_dump(load_checkpoint(run / "checkpoints" / "last.pt")["config"])
    )
    before = (run / "config.yaml").read_text()
    args = tiny_corpus.cli_args(run, "train.max_updates=5", "train.lr=1e-4")
    result = run_process("train", *args, "--no-evaluate", cwd=tmp_path)
    assert_clean_failure(result, "train.lr 0.002 -> 0.0001", "fresh run directory")
    assert (run / "config.yaml").read_text() == before


def test_settings_that_take_effect_on_resume_do(tiny_corpus, trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    logs: list[str] = []
    changes = ("train.max_updates=5", "train.keep_last=1", "train.log_every=2")
    result = fit(tiny_corpus.config(run, *changes), logs)
    assert result.state.step == 5
    assert any("resuming from" in line and "at update 3" in line for line in logs)
    assert checkpoint_files(run) == ["best.pt", "last.pt", "step_5.pt"]  # keep_last=1 pruned
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["keep_last"] == 1
    steps = [line for line in logs if line.startswith("update ")]
    assert [line.split()[1] for line in steps] == ["4"]  # log_every=2: update 4 only


# --------------------------------------------------------------------------- data fingerprint


def test_resume_on_re_prepared_data_is_refused(tiny_corpus, trained_run, tmp_path):
    """Same vocabulary size, another SentencePiece type: the shapes fit, so only the
    fingerprint tells that the weights were trained on other token ids."""
    run = copy_run(trained_run, tmp_path)
    bpe = tiny_corpus.config(run, "data.spm_model_type=bpe")
    with pytest.raises(DataError) as refusal:
        prepare(bpe)
    assert "--force" in str(refusal.value) and "can no longer be resumed" in str(refusal.value)
    result = prepare(bpe, force=True)
    assert [p.name for p in result.orphaned_checkpoints] == checkpoint_files(run)
    # The old settings, on the new prepared data:
    with pytest.raises(TrainingError) as error:
        fit(tiny_corpus.config(run, "train.max_updates=5"))
    assert "trained on another SentencePiece model" in str(error.value)
    assert "the run must restart" in str(error.value)


def test_re_preparing_the_same_training_data_keeps_the_run(tiny_corpus, trained_run, tmp_path):
    """Another evaluation split re-runs prepare, but the weights' data stays the same."""
    run = copy_run(trained_run, tmp_path)
    result = prepare(tiny_corpus.config(run, "data.test_splits=[val]"))
    assert not result.skipped and result.orphaned_checkpoints == []
    assert fit(tiny_corpus.config(run, "train.max_updates=4")).state.step == 4


def test_prepare_cli_refuses_then_forces_and_train_refuses(tiny_corpus, trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    args = tiny_corpus.cli_args(run, "data.spm_model_type=bpe")
    assert_clean_failure(run_process("prepare", *args, cwd=tmp_path), "--force", str(run))
    forced = run_process("prepare", *args, "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "warning: replaced the prepared data" in forced.stderr
    assert "can no longer be resumed" in forced.stderr
    train = run_process(
        "train", *tiny_corpus.cli_args(run, "train.max_updates=5"), "--no-evaluate", cwd=tmp_path
    )
    assert_clean_failure(train, "another SentencePiece model", "the run must restart")


def test_a_version_1_checkpoint_loads_resumes_and_decodes(tiny_corpus, trained_run, tmp_path):
    """A file written the old way (format 1: no fingerprint) is upgraded on load."""
    run = copy_run(trained_run, tmp_path)
    for name in ("last.pt", "step_3.pt"):
        state = load_checkpoint(run / "checkpoints" / name)
        del state["fingerprint"]
        state["format_version"] = 1
        (run / "checkpoints" / name).unlink()
        torch.save(state, run / "checkpoints" / name)  # as nmt 1 wrote it
    upgraded = read_model_checkpoint(run / "checkpoints" / "last.pt")
    assert upgraded.state["format_version"] == 2
    assert upgraded.fingerprint["data"] is None
    assert (
        upgraded.fingerprint["tokenizer"]
        == load_checkpoint(trained_run / "checkpoints" / "last.pt")["fingerprint"]["tokenizer"]
    )
    logs: list[str] = []
    assert fit(tiny_corpus.config(run, "train.max_updates=4"), logs).state.step == 4
    assert any("step_3.pt" in line or "last.pt" in line for line in logs if "resuming" in line)


# --------------------------------------------------------------------------- fallback


def _break(state: dict, how: str) -> dict:
    if how == "tensor shape":
        state["model"]["encoder_norm.weight"] = torch.zeros(3)
    elif how == "tensor dtype":
        state["model"]["encoder_norm.weight"] = torch.zeros_like(
            state["model"]["encoder_norm.weight"], dtype=torch.int64
        )
    elif how == "train_state":
        state["train_state"]["step"] = "three"
    elif how == "optimizer moments":
        first = next(iter(state["optimizer"]["state"].values()))
        first["exp_avg"] = torch.zeros(7)
    elif how == "config as list":
        state["config"] = [1, 2]
    elif how == "spm missing":
        del state["spm"]
    elif how == "scheduler":
        state["scheduler"]["last_epoch"] = "x"
    return state


@pytest.mark.parametrize(
    "how",
    [
        "tensor shape",
        "tensor dtype",
        "train_state",
        "optimizer moments",
        "config as list",
        "spm missing",
        "scheduler",
    ],
)
def test_resume_falls_back_past_a_malformed_checkpoint(
    tiny_corpus, trained_run, tmp_path, capsys, how
):
    run = copy_run(trained_run, tmp_path)
    for name in ("last.pt", "step_3.pt"):
        path = run / "checkpoints" / name
        broken = _break(load_checkpoint(path), how)
        path.unlink()  # last.pt and step_3.pt are one file (a hard link)
        save_checkpoint(path, broken)
    logs: list[str] = []
    result = fit(tiny_corpus.config(run, "train.max_updates=4"), logs)
    assert any(line.endswith("step_2.pt at update 2") for line in logs), logs
    assert result.state.step == 4
    assert "warning: skipping checkpoint" in capsys.readouterr().err


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(tiny_corpus, trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    for path in (run / "checkpoints").iterdir():
        broken = _break(load_checkpoint(path), "train_state")
        path.unlink()
        save_checkpoint(path, broken)
    with pytest.raises(CheckpointError, match="no loadable checkpoint"):
        fit(tiny_corpus.config(run, "train.max_updates=4"))
