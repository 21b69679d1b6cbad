"""From YAML and overrides to a validated `ExperimentConfig`: the merged tree (renamed keys
moved, `model.preset` filling the model keys not set, `train.init_from`'s architecture and
tokenizer) converted to each field's type and checked against its bounds, then the rules
between keys; every problem is collected into one `ConfigError`."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from nmt.config.inheritance import InitConfig, init_checkpoint_config, is_set, take_from_init
from nmt.config.overrides import (
    apply_model_preset,
    mark_override_problems,
    merge_overrides,
    parse_overrides,
    rename_old_keys,
)
from nmt.config.schema import DataConfig, DecodeConfig, ExperimentConfig, Pattern, Range
from nmt.config.yaml_io import read_yaml_mapping
from nmt.errors import ConfigError


def load_config(
    path: str | Path | None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    init_config: InitConfig | None = None,
) -> ExperimentConfig:
    """Read a YAML config (or start from defaults when `path` is None) and apply overrides.
    `init_config` reads the config of the checkpoint `train.init_from` names; a config that
    sets it is refused without one (`nmt.checkpoint.load_run_config` passes the reader)."""
    source = str(path) if path is not None else None
    raw = read_yaml_mapping(Path(path)) if path is not None else {}
    overrides_map = parse_overrides(overrides)
    init = init_checkpoint_config(merge_overrides(raw, overrides_map, []), init_config, source)
    try:
        return config_from_dict(raw, overrides=overrides_map, source=source, init=init)
    except ConfigError as exc:
        marked = mark_override_problems(exc.problems, overrides_map)
        raise ConfigError(marked, exc.source) from None


def config_from_dict(
    raw: dict[str, Any],
    *,
    overrides: dict[str, Any] | None = None,
    source: str | None = None,
    init: ExperimentConfig | None = None,
) -> ExperimentConfig:
    """Build and validate an `ExperimentConfig`; every problem is reported in one error.

    `init` is the config of the checkpoint `train.init_from` names: the keys of
    `inherited_from_init` that the config leaves unset are taken from it."""
    problems: list[str] = []
    tree = merge_overrides(raw, overrides or {}, problems)
    rename_old_keys(tree, problems)
    apply_model_preset(tree, problems)
    cfg = _build(ExperimentConfig, tree, "", problems)
    if init is not None and not problems:
        cfg = take_from_init(cfg, tree, init, problems)
    if not problems:
        problems.extend(cross_field_problems(cfg))
        problems.extend(corpora_problems(cfg.data, named_corpus=is_set(tree, "data.corpus")))
    if problems:
        raise ConfigError(problems, source)
    return cfg


def decode_option_problems(values: dict[str, Any]) -> list[str]:
    """Problems of decode settings given one at a time (decoding options): types, finite
    numbers, ranges and choices, each named `decode.<key>`; the rules between settings are
    `decode_problems`'."""
    problems: list[str] = []
    _build(DecodeConfig, values, "decode.", problems)
    return problems


def _build(cls: type, values: Any, prefix: str, problems: list[str]) -> Any:
    """Convert a mapping into dataclass `cls`, appending problems instead of raising."""
    where = prefix.rstrip(".") or "the top level"
    if values is None:
        values = {}
    if not isinstance(values, dict):
        problems.append(f"{where}: expected a mapping, got {_describe(values)}")
        return cls()
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            problems.append(_unknown_key_message(prefix, str(key), list(fields)))
    kwargs = {}
    for name in fields:
        if name not in values:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, values[name], f"{prefix}{name}.", problems)
            continue
        item_type = _section_list_item(hint)
        if item_type is not None:
            kwargs[name] = _build_list(item_type, values[name], f"{prefix}{name}", problems)
            continue
        ok, converted, allowed = _convert(values[name], hint)
        if ok:
            kwargs[name] = converted
        else:
            problems.append(f"{prefix}{name}: got {_describe(values[name])}, expected {allowed}")
    instance = cls(**kwargs)  # only known keys, each converted: a section takes them all
    problems.extend(range_problems(instance, prefix))
    return instance


def _section_list_item(hint: Any) -> type | None:
    """The item class of a list of sub-sections (`tuple[CorpusWeight, ...] | None`), else None."""
    hint = get_args(hint)[0] if get_origin(hint) is Annotated else hint
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    lists = [o for o in options if get_origin(o) is tuple]
    if len(lists) == 1 and dataclasses.is_dataclass(get_args(lists[0])[0]):
        return get_args(lists[0])[0]
    return None


def _build_list(cls: type, values: Any, key: str, problems: list[str]) -> tuple | None:
    """A YAML list of mappings -> a tuple of `cls`; items' problems are named `key[i].field`."""
    if values is None:
        return None
    if not isinstance(values, list):
        names = ", ".join(f.name for f in dataclasses.fields(cls))
        problems.append(f"{key}: got {_describe(values)}, expected a list of mappings ({names})")
        return None
    return tuple(_build(cls, item, f"{key}[{i}].", problems) for i, item in enumerate(values))


def _unknown_key_message(prefix: str, key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    return f"{prefix}{key}: unknown key{hint} (valid keys: {', '.join(valid)})"


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _convert(value: Any, hint: Any) -> tuple[bool, Any, str]:
    """Check `value` against a type hint; returns (ok, converted value, what is allowed)."""
    origin = get_origin(hint)
    if origin is Annotated:
        return _convert_annotated(value, hint)
    if origin is Literal:
        options = get_args(hint)
        return value in options, value, "one of " + ", ".join(repr(o) for o in options)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return True, None, "null"
        ok, converted, allowed = _convert(value, args[0])
        return ok, converted, f"{allowed} or null"
    if origin is tuple:
        return _convert_tuple(value, get_args(hint))
    if hint is bool:
        return isinstance(value, bool), value, "true or false"
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value, "an integer"
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads `5e-4` (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):  # .nan passes every range check; .inf is no size
            return False, value, "a finite number"
        return ok, float(value) if ok else value, "a number"
    if hint is str:  # a NUL cannot be in a path, or in any text a setting holds
        if isinstance(value, str) and "\0" in value:
            return False, value, "a string without NUL characters"
        return isinstance(value, str), value, "a string"
    raise TypeError(f"unsupported config type {hint}")  # pragma: no cover


def _convert_annotated(value: Any, hint: Any) -> tuple[bool, Any, str]:
    base, *extras = get_args(hint)
    ok, converted, allowed = _convert(value, base)
    for pattern in (e for e in extras if isinstance(e, Pattern)):
        allowed = pattern.allowed
        ok = ok and pattern.matches(converted)
    return ok, converted, allowed


def _convert_tuple(value: Any, args: tuple) -> tuple[bool, Any, str]:
    variadic = len(args) == 2 and args[1] is Ellipsis
    if isinstance(value, str) and variadic:
        value = [value]  # `test_splits: test_2016_flickr` is a one-item list
    item_types = [args[0]] * (len(value) if isinstance(value, list) else 0) if variadic else args
    allowed = f"a list of {_type_name(args[0])}" if variadic else f"a list of {len(args)} numbers"
    if not isinstance(value, (list, tuple)) or len(value) != len(item_types):
        return False, value, allowed
    out = []
    for item, item_type in zip(value, item_types):
        ok, converted, _ = _convert(item, item_type)
        if not ok:
            return False, value, allowed
        out.append(converted)
    return True, tuple(out), allowed


def _type_name(hint: Any) -> str:
    if get_origin(hint) is Annotated:
        patterns = [e for e in get_args(hint)[1:] if isinstance(e, Pattern)]
        return f"strings, each {patterns[0].allowed}" if patterns else _type_name(get_args(hint)[0])
    return {str: "strings", int: "integers", float: "numbers"}.get(hint, str(hint))


# An integer setting without a bound of its own must still fit the int64 torch and numpy use.
_INT64 = Range(-(2**63), 2**63 - 1)


def _within_int64(allowed: Range) -> Range:
    lo = _INT64.lo if allowed.lo is None else max(allowed.lo, _INT64.lo)
    hi = _INT64.hi if allowed.hi is None else min(allowed.hi, _INT64.hi)
    return dataclasses.replace(allowed, lo=lo, hi=hi)


def range_problems(section: Any, prefix: str) -> list[str]:
    """Every number of `section` (every item of a tuple of numbers) against its field's
    `Range` (int64's for an integer field without one)."""
    problems = []
    hints = typing.get_type_hints(type(section), include_extras=True)
    for f in dataclasses.fields(section):
        key, value = prefix + f.name, getattr(section, f.name)
        extras = get_args(hints[f.name])[1:] if get_origin(hints[f.name]) is Annotated else ()
        bound = next((e for e in extras if isinstance(e, Range)), _INT64)
        items = value if isinstance(value, tuple) else (value,)
        for i, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            allowed = bound
            if isinstance(item, int) and not _INT64.contains(item):
                allowed = _within_int64(allowed)  # torch and numpy hold int64 at most
            if not allowed.contains(item):
                where = f"{key}[{i}]" if isinstance(value, tuple) else key
                problems.append(f"{where}: {item!r} is out of range; allowed {allowed.text()}")
    return problems


def decode_problems(dec: DecodeConfig) -> list[str]:
    """Rules between decode settings (also checked for command-line decoding options)."""
    if dec.n_best > dec.beam_size:
        return [f"decode.n_best ({dec.n_best}) must be <= decode.beam_size ({dec.beam_size})"]
    return []


def cross_field_problems(cfg: ExperimentConfig) -> list[str]:
    """Rules that involve more than one key."""
    problems = []
    m, d, t, dec = cfg.model, cfg.data, cfg.train, cfg.decode
    if m.d_model % m.heads:
        problems.append(f"model.d_model ({m.d_model}) must be divisible by model.heads ({m.heads})")
    elif (m.d_model // m.heads) % 2:
        problems.append(f"model.d_model / model.heads ({m.d_model // m.heads}) must be even")
    if m.share_embeddings and not d.joint_vocab:
        problems.append("model.share_embeddings: true requires data.joint_vocab: true")
    problems.extend(decode_problems(dec))
    if d.src_lang == d.tgt_lang:
        problems.append(f"data.src_lang and data.tgt_lang are both {d.src_lang!r}")
    if dec.max_input_tokens + 2 > m.max_positions:
        problems.append(
            f"decode.max_input_tokens ({dec.max_input_tokens}) + 2 must be <= model.max_positions "
            f"({m.max_positions})"
        )
    if d.max_tokens_per_sentence + 2 > m.max_positions:
        problems.append(
            f"data.max_tokens_per_sentence ({d.max_tokens_per_sentence}) + 2 must be <= "
            f"model.max_positions ({m.max_positions})"
        )
    if d.max_tokens_per_sentence + 2 > t.max_tokens:
        problems.append(
            f"train.max_tokens ({t.max_tokens}) must hold one sentence of "
            f"data.max_tokens_per_sentence + 2 ({d.max_tokens_per_sentence + 2}) tokens"
        )
    return problems


def corpora_problems(d: DataConfig, *, named_corpus: bool) -> list[str]:
    """`data.corpora` rules: a non-empty list, each corpus named once, and `data.corpus` set
    (`named_corpus`: written in the config) to one of them, the corpus of the validation and
    test splits. A resolved config (config.yaml, a checkpoint's) always writes data.corpus."""
    if d.corpora is None:
        return []
    if not d.corpora:
        return [
            "data.corpora: an empty list; list the training corpora ({name, weight} each), or "
            "leave data.corpora out (null) to train on data.corpus alone"
        ]
    problems, first = [], {}
    for i, c in enumerate(d.corpora):
        if not c.name:
            problems.append(f"data.corpora[{i}].name: missing; name a corpus of data.data_dir")
        elif c.name in first:
            problems.append(
                f"data.corpora[{i}].name: {c.name!r} is listed twice (also data.corpora"
                f"[{first[c.name]}]); list each corpus once and give it the weight wanted"
            )
        first.setdefault(c.name, i)
    listed = ", ".join(first)
    if not named_corpus:
        problems.append(
            f"data.corpus: not set; with data.corpora, name the listed corpus whose "
            f"data.valid_split and data.test_splits validate and test the model (one of: {listed})"
        )
    elif d.corpus not in first:
        problems.append(
            f"data.corpus: {d.corpus!r} is not in data.corpora ({listed}); with data.corpora, "
            "data.corpus names the listed corpus whose data.valid_split and data.test_splits "
            "validate and test the model (to train on it too, list it in data.corpora)"
        )
    return problems
