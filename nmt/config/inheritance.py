"""`train.init_from`: a run that starts from a checkpoint takes that checkpoint's architecture
and tokenizer. The rules live here; reading the checkpoint is the caller's (the config layer
reads no checkpoint): `load_config(init_config=...)`, as `nmt.checkpoint.load_run_config` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from nmt.config.schema import NOT_ARCHITECTURE, ExperimentConfig, ModelConfig
from nmt.errors import CheckpointError, ConfigError

# Reads the config stored in the checkpoint at a path (`train.init_from`'s value).
InitConfig = Callable[[str], ExperimentConfig]

# Data keys that describe the SentencePiece models: a run started from a checkpoint reuses
# that checkpoint's models (`nmt prepare` copies them instead of training new ones).
TOKENIZER_KEYS = (
    "joint_vocab",
    "vocab_size",
    "spm_model_type",
    "character_coverage",
    "byte_fallback",
    "spm_sample",
)


def inherited_from_init() -> list[str]:
    """The dotted keys a run with `train.init_from` takes from that checkpoint's config: the
    architecture (every model key but `NOT_ARCHITECTURE`, so that a new model option counts
    as architecture) and the tokenizer (`TOKENIZER_KEYS`). A config that sets one of them to
    another value is refused; one that leaves it unset gets the checkpoint's."""
    model = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in NOT_ARCHITECTURE]
    return [f"model.{name}" for name in model] + [f"data.{name}" for name in TOKENIZER_KEYS]


def init_checkpoint_config(
    tree: dict[str, Any], read: InitConfig | None, source: str | None
) -> ExperimentConfig | None:
    """The config of the checkpoint `train.init_from` names in the merged `tree`, from `read`,
    or None when the key is unset or not a usable string (then validation reports its type).
    A file that is missing or no valid checkpoint is a problem of that key, as is no `read`."""
    train = tree.get("train")
    value = train.get("init_from") if isinstance(train, dict) else None
    if not isinstance(value, str) or "\0" in value:
        return None
    if read is None:  # the config would miss the checkpoint's architecture and tokenizer
        reason = "no checkpoint is read here; load the config with nmt.checkpoint.load_run_config"
        raise ConfigError([f"train.init_from: {value}: {reason}"], source)
    try:
        return read(value)
    except CheckpointError as exc:
        raise ConfigError([f"train.init_from: {exc}"], source) from None
    except OSError as exc:  # a name too long for the file system, say (before any read)
        problem = f"train.init_from: cannot read {value}: {exc.strerror}"
        raise ConfigError([problem], source) from None


def take_from_init(
    cfg: ExperimentConfig, tree: dict[str, Any], init: ExperimentConfig, problems: list[str]
) -> ExperimentConfig:
    """`cfg` with the architecture and tokenizer keys it leaves unset taken from `init` (and
    its model.preset name, if the config names none); keys it sets to other values are one
    problem, each shown as config vs checkpoint value."""
    conflicts = init_conflicts(cfg, init, only=lambda key: is_set(tree, key))
    if conflicts:
        problems.append(
            f"train.init_from: {cfg.train.init_from} fixes the model's architecture and "
            f"tokenizer, and the config sets other values: {'; '.join(conflicts)}; remove "
            "these keys from the config (the run takes them from the checkpoint)"
        )
        return cfg
    taken: dict[str, dict[str, Any]] = {"data": {}, "model": {}}
    for key in [*inherited_from_init(), "model.preset"]:
        section, name = key.split(".")
        if not is_set(tree, key):
            taken[section][name] = getattr(getattr(init, section), name)
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, **taken["data"]),
        model=dataclasses.replace(cfg.model, **taken["model"]),
    )


def init_conflicts(
    cfg: ExperimentConfig, init: ExperimentConfig, *, only: Any = lambda key: True
) -> list[str]:
    """`key <config value> (config) vs <checkpoint value> (checkpoint)` for every key of
    `inherited_from_init` (passing `only`) on which `cfg` and the checkpoint's `init` differ."""
    shown = []
    for key in inherited_from_init():
        section, name = key.split(".")
        ours, theirs = getattr(getattr(cfg, section), name), getattr(getattr(init, section), name)
        if only(key) and ours != theirs:
            shown.append(f"{key} {ours!r} (config) vs {theirs!r} (checkpoint)")
    return shown


def is_set(tree: dict[str, Any], key: str) -> bool:
    """Whether the merged YAML and overrides (model preset applied) give dotted `key`."""
    section, name = key.split(".")
    return isinstance(tree.get(section), dict) and name in tree[section]
