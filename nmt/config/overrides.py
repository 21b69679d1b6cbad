"""Command-line overrides (`train.lr=5e-4`, values read as YAML) merged into the YAML tree,
renamed keys moved to their new names, and model presets filling the keys not set."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from nmt.config.schema import MODEL_PRESETS
from nmt.config.yaml_io import RefusedYAML, load_yaml
from nmt.errors import ConfigError


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`["train.lr=5e-4", "model.layers=3"]` -> `{"train.lr": 0.0005, ...}` (values as YAML;
    a value that is not YAML stays a string, but an alias or an oversized value is refused)."""
    parsed: dict[str, Any] = {}
    problems = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not all(part.strip() for part in key.split(".")):
            problems.append(f"override {item!r} must look like section.key=value")
            continue
        try:
            parsed[key.strip()] = load_yaml(value) if value.strip() else None
        except RefusedYAML as exc:
            problems.append(f"override {key.strip()}: {exc.problem}")
        except yaml.YAMLError:
            parsed[key.strip()] = value
    if problems:
        raise ConfigError(problems, "command-line overrides")
    return parsed


# Keys that were renamed: old dotted key -> new one. Configs, checkpoints and exports written
# before the rename store the old name; it keeps working (one value: giving both is refused).
RENAMED_KEYS: dict[str, str] = {"data.spm_input_sentence_size": "data.spm_sample"}


def mark_override_problems(problems: list[str], overrides: dict[str, Any]) -> list[str]:
    """Say which problems come from the command line: the YAML file does not hold those keys.

    A problem names its key first (`model.nope: unknown key`); an override `nope.x=1` is to
    blame for a problem with its own key or a section above it (`nope: unknown key`).
    """
    marked = []
    for problem in problems:
        key = problem.split(":", 1)[0]
        from_override = any(
            dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "[")
            for dotted in overrides
        )  # `data.corpora[1].weight` comes from an override `data.corpora=[...]`
        marked.append(f"{problem} (command-line override)" if from_override else problem)
    return marked


def merge_overrides(raw: dict[str, Any], overrides: dict[str, Any], problems: list[str]) -> dict:
    """A copy of the YAML tree `raw` with every dotted override set in it."""
    tree = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = tree
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"override {dotted}: {part} is not a section")
                break
            node = child
        else:
            node[parts[-1]] = value
    return tree


def rename_old_keys(tree: dict[str, Any], problems: list[str]) -> None:
    """Move the value of every key in `RENAMED_KEYS` (in `tree`, in place) to its new name."""
    for old, new in RENAMED_KEYS.items():
        (section, old_name), (new_section, new_name) = old.split("."), new.split(".")
        node, target = tree.get(section), tree.get(new_section)
        if not isinstance(node, dict) or old_name not in node or not isinstance(target, dict):
            continue
        value = node.pop(old_name)
        if new_name in target:
            problems.append(f"{old}: renamed {new}; give only {new}")
        else:
            target[new_name] = value


def apply_model_preset(tree: dict[str, Any], problems: list[str]) -> None:
    """Fill the model keys of `tree` (in place) that `model.preset` sets and the tree does not."""
    model = tree.get("model")
    name = model.get("preset") if isinstance(model, dict) else None
    if not isinstance(name, str):
        return  # unset, or a list or a number: `_build` reports the type
    if name not in MODEL_PRESETS:
        allowed = ", ".join(MODEL_PRESETS)
        problems.append(f"model.preset: unknown preset {name!r}; allowed: {allowed}")
        return
    for key, value in MODEL_PRESETS[name].items():
        model.setdefault(key, value)
