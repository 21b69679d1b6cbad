"""What a resumed run may change, and what a checkpoint must hold to be resumed from.

Re-running `nmt train` on a run directory with checkpoints continues the run. Every config
key is in exactly one of two sets (a test checks that none is forgotten):

- `TAKES_EFFECT_ON_RESUME`: read afresh by the resumed run (stop conditions, logging,
  validation and saving cadence, checkpoints kept, threads, device, decoding and scoring for
  the final evaluation, where the data lives). A new value simply applies from the resumed
  update on.
- `FIXED_FOR_A_RUN`: everything the saved weights, optimizer moments, schedule or data
  order depend on (architecture, data and tokenizer, optimizer and schedule, batching,
  seed, precision, dropout, label smoothing, and `train.init_from`: a resumed run continues
  from its own checkpoint and never starts again from the one it was initialised from). The
  checkpoint restores those, so a new value could not take effect: the resume is refused,
  naming every changed key old -> new, and the ways out (a fresh run directory, or a new run
  that starts from the checkpoint's weights with `train.init_from`).

A checkpoint is resumed from only if, besides the model schema `nmt.checkpoint` checks, its
training state is well-formed and restores; otherwise (`CheckpointError`) the run falls back
to the previous checkpoint, as for a corrupt file. The tokenizer and prepared data it was
trained on (its fingerprint) must be those of the run directory now.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import torch

from nmt.config import SECTIONS, ExperimentConfig, config_to_dict
from nmt.errors import CheckpointError, TrainingError

TAKES_EFFECT_ON_RESUME = frozenset(
    {
        "name",
        "run_dir",
        "data.data_dir",
        "data.mirror",
        "data.encode_workers",  # prepare's output is the same with any number of processes
        "data.valid_split",
        "data.test_splits",
        "train.device",
        "train.compile",
        "train.threads",
        "train.max_updates",
        "train.max_epochs",
        "train.max_minutes",
        "train.log_every",
        "train.valid_every",
        "train.save_every",
        "train.keep_last",
        "train.valid_bleu",
        "train.valid_bleu_beam",
        "train.valid_bleu_max_sentences",
        "train.patience",
        "train.max_nonfinite_in_row",
        "train.average_last",
        "train.tensorboard",
    }
    | {f"decode.{f.name}" for f in dataclasses.fields(SECTIONS["decode"])}
    # Scoring reads no weights; a resumed run's valid BLEU (and best.pt) follows a new value.
    | {f"eval.{f.name}" for f in dataclasses.fields(SECTIONS["eval"])}
)

# data.corpora is fixed too: its weights decide which pairs each epoch holds, so the data
# order (and the prepared training split, with its corpus list) depends on them.
FIXED_FOR_A_RUN = frozenset(
    {
        f"{section}.{f.name}"
        for section in ("data", "model", "train")
        for f in dataclasses.fields(SECTIONS[section])
    }
    - TAKES_EFFECT_ON_RESUME
)

# What the trainer restores; a checkpoint without them (an averaged one) cannot go on.
TRAINING_KEYS = ("model", "optimizer", "scheduler", "scaler", "train_state", "rng")


def all_config_keys() -> set[str]:
    """Every dotted key of the config (sections' fields and the top-level scalars)."""
    top = {f.name for f in dataclasses.fields(ExperimentConfig) if f.name not in SECTIONS}
    return top | {
        f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
    }


# --------------------------------------------------------------------------- settings


def check_same_settings(path: Path, saved: ExperimentConfig, cfg: ExperimentConfig) -> None:
    """Refuse to resume from `path` (trained with `saved`) when a FIXED_FOR_A_RUN key differs."""
    before, now = _flatten(config_to_dict(saved)), _flatten(config_to_dict(cfg))
    changed = sorted(k for k in FIXED_FOR_A_RUN if before.get(k) != now.get(k))
    if changed:
        listed = "; ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise TrainingError(
            f"cannot resume {cfg.run_path} from {path} with changed settings: {listed}. A "
            "resumed run restores these from its checkpoint, so they cannot change; to train "
            "with them, use a fresh run directory (another name or run_dir), or start a new "
            f"run from this checkpoint's weights with a fresh optimizer and schedule: "
            f"train.init_from={path} (or --init-from {path}) with another name or run_dir"
        )


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_same_data(
    path: Path, saved: dict[str, str | None], current: dict[str, str | None], run_dir: Path
) -> None:
    """Refuse to resume on another tokenizer or other prepared data than `path` was trained
    on (`nmt prepare` run again with other settings). A version-1 checkpoint knows only its
    tokenizer (data None)."""
    if saved["tokenizer"] == current["tokenizer"] and saved["data"] in (None, current["data"]):
        return
    what = "SentencePiece model" if saved["tokenizer"] != current["tokenizer"] else "data"
    raise TrainingError(
        f"cannot resume {run_dir} from {path}: it was trained on another {what} than the "
        f"prepared data in {run_dir / 'data'} now (nmt prepare ran again since); the run must "
        "restart: use a fresh run directory (another name or run_dir) or delete "
        f"{path.parent}, or start a new run from its weights (train.init_from={path} with "
        "another name or run_dir)"
    )


# --------------------------------------------------------------------------- training state


def check_training_state(path: Path, state: dict[str, Any], train_state_type: type) -> None:
    """The schema of what a resume restores besides the model; `CheckpointError` (so that
    the resume falls back to an older file) names the first entry that is wrong."""
    missing = [key for key in TRAINING_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"cannot resume from {path}: it holds no {', '.join(missing)} state "
            "(an averaged checkpoint, or one not written by nmt train)"
        )
    for key in ("optimizer", "scheduler", "scaler", "rng"):
        if not isinstance(state[key], dict):
            raise CheckpointError(f"cannot resume from {path}: {key} is not a mapping")
    _check_dataclass_values(path, state["train_state"], train_state_type)


def _check_dataclass_values(path: Path, values: Any, cls: type) -> None:
    where = f"cannot resume from {path}: train_state"
    if not isinstance(values, dict):
        raise CheckpointError(f"{where} is a {type(values).__name__}, not a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if set(values) != set(names):
        raise CheckpointError(f"{where} has keys {sorted(map(str, values))}; expected {names}")
    for name in names:
        if not _matches(values[name], hints[name]):
            raise CheckpointError(f"{where}.{name} is {values[name]!r}; expected {hints[name]}")


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` is of type `hint` (int, float, str, X | None), and finite and >= 0
    where a number: counts, positions and times never go below zero."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is str:
        return isinstance(value, str)
    if hint is int:
        return type(value) is int and value >= 0
    if hint is float:
        return type(value) in (int, float) and math.isfinite(value)
    return False


def check_restored_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    """After `optimizer.load_state_dict`: moments shaped as their parameters and numeric
    hyperparameters, or the first update would crash (torch checks neither)."""
    for group in optimizer.param_groups:
        for key in ("lr", "eps", "weight_decay"):
            if type(group.get(key)) not in (int, float):
                raise CheckpointError(f"cannot resume from {path}: optimizer {key} is malformed")
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                wrong = not isinstance(value, torch.Tensor) or (
                    name != "step" and value.shape != param.shape
                )
                if wrong:
                    raise CheckpointError(
                        f"cannot resume from {path}: optimizer state {name} does not match "
                        f"its parameter of shape {tuple(param.shape)}"
                    )


def check_restored_scheduler(path: Path, scheduler: Any, optimizer: torch.optim.Optimizer) -> None:
    """After `scheduler.load_state_dict` (a plain `__dict__.update`): the step count and
    learning rates the next `scheduler.step()` reads."""
    epoch, base = scheduler.last_epoch, scheduler.base_lrs
    fine = type(epoch) is int and epoch >= 0 and isinstance(base, list)
    fine = fine and len(base) == len(optimizer.param_groups)
    if fine:
        try:
            fine = all(math.isfinite(f(epoch + 1)) for f in scheduler.lr_lambdas)
        except (TypeError, ValueError, ZeroDivisionError, AttributeError):
            fine = False
    if not fine:
        raise CheckpointError(f"cannot resume from {path}: scheduler state is malformed")
