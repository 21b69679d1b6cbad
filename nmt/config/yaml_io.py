"""The one YAML reader of nmt (config files and command-line override values), hardened
against what a plain `yaml.safe_load` lets through, and the writer of resolved configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nmt.config.schema import ExperimentConfig, config_to_dict
from nmt.errors import ConfigError

# Bounds on YAML input. A config is a few KiB; nesting deeper than a few levels is no config
# (and PyYAML composes nodes recursively); 40 digits is far beyond any setting, and Python
# refuses to convert more than 4300 digits at all (a ValueError from inside PyYAML).
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_INT_DIGITS = 40


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Load a YAML file that must hold a mapping; errors name the file, line and column."""

    def refused(problem: str) -> ConfigError:
        return ConfigError([problem], str(path))

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)  # bounded: a config is never a large file
    except FileNotFoundError:
        raise ConfigError([f"config file not found: {path}"]) from None
    except OSError as exc:
        raise refused(f"cannot read config file: {exc.strerror}") from None
    if len(data) > MAX_YAML_BYTES:
        raise refused(f"config file is larger than {MAX_YAML_BYTES // 1024} KiB; is it a config?")
    try:
        data = load_yaml(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise refused(f"config file is not valid UTF-8 (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise refused(f"malformed YAML at {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise refused(f"the top level must be a mapping, got {type(data).__name__}")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + (getattr(exc, "problem", None) or str(exc))


def load_yaml(text: str) -> Any:
    """The one YAML reader of nmt (config files and command-line override values): plain
    data only, no aliases, no duplicate keys, bounded size, depth and integers. Every
    problem is a `yaml.YAMLError`; a `RefusedYAML` is one of these bounds."""
    if len(text) > MAX_YAML_BYTES:
        raise RefusedYAML(f"more than {MAX_YAML_BYTES} characters of YAML")
    return yaml.load(text, Loader=StrictLoader)


class RefusedYAML(yaml.MarkedYAMLError):
    """Valid YAML that nmt refuses: an alias, nesting too deep, an integer too long."""

    def __init__(self, problem: str, mark: yaml.Mark | None = None):
        super().__init__(None, None, problem, mark)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML would silently keep the last one, so a
    second `train:` section would erase the first without a word) and aliases: nested
    aliases expand exponentially (a 438-byte "billion laughs" config is gigabytes once
    copied), and a config has no need for them. Values that no constructor can build
    (`!!int abc`) are YAML errors here, not stray ValueErrors; dates stay text."""

    _depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            problem = f"alias *{event.anchor} is not allowed: write the value out"
            raise RefusedYAML(problem, event.start_mark)
        if self._depth >= MAX_YAML_DEPTH:
            raise RefusedYAML(f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            shown = node.value if isinstance(node.value, str) else node.id
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown!r} as {node.tag}", node.start_mark
            ) from None


def _construct_mapping_once(loader: StrictLoader, node: yaml.MappingNode) -> dict:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = key in first_line
        except TypeError:  # an unhashable key: SafeLoader reports it below
            continue
        if seen:
            problem = f"duplicate key {key!r} (first on line {first_line[key] + 1})"
            raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
        first_line[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


def _construct_bounded_int(loader: StrictLoader, node: yaml.ScalarNode) -> int:
    digits = len(node.value.lstrip("+-").replace("_", ""))
    if digits > MAX_INT_DIGITS:
        problem = f"an integer of {digits} digits; at most {MAX_INT_DIGITS} are read"
        raise RefusedYAML(problem, node.start_mark)
    return loader.construct_yaml_int(node)


StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping_once)
StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_bounded_int)
# A date (`name: 2024-01-01`) stays the text it is: no setting is a date.
StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_scalar)


def write_resolved_config(cfg: ExperimentConfig, directory: Path | None = None) -> Path:
    """Write the resolved config as `config.yaml` in the run directory (atomically)."""
    from nmt.files import atomic_write

    path = Path(directory or cfg.run_path) / "config.yaml"
    with atomic_write(path) as f:
        f.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True))
    return path
