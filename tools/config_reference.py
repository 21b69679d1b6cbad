"""Write docs/configuration.md, the configuration reference, from the schema.

    python tools/config_reference.py

Every key of nmt/config/schema.py with its type (the choices of a choice set), default,
bounds and description, and whether a new value takes effect when a run resumes (the rule
table of nmt/training/resume.py). tests/test_config_reference.py fails when the committed
file is not what `render()` writes.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from nmt.config.schema import (
    MODEL_PRESETS,
    SECTIONS,
    CorpusWeight,
    Doc,
    ExperimentConfig,
    Pattern,
    Range,
)
from nmt.training.resume import TAKES_EFFECT_ON_RESUME

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
COMMAND = "python tools/config_reference.py"

INTRO = f"""# Configuration reference

<!-- Generated from nmt/config/schema.py by `{COMMAND}`: edit the schema, not this file. -->

A config is a YAML file with the sections below; every key may be left out (it takes its
default) or overridden on the command line, `nmt train my.yaml train.lr=3e-4`.
[`configs/reference.yaml`](../configs/reference.yaml) lists every key with its default.
Errors name the key and what is allowed, every problem at once.

*On resume*: re-running `nmt train` on a run directory with checkpoints continues the run.
A key that **takes effect** is read afresh by the resumed run; a key that is **fixed** is
restored from the checkpoint (weights, optimizer, schedule or data order depend on it), so a
resume with another value is refused, naming the key: start a fresh run directory, or a new
run from the checkpoint's weights with `train.init_from`.
"""

HEADER = "| Key | Type | Default | Bounds | Description | On resume |\n|---|---|---|---|---|---|"


def render() -> str:
    """The whole of docs/configuration.md."""
    top = [f for f in dataclasses.fields(ExperimentConfig) if f.name not in SECTIONS]
    parts = [INTRO, "## Top level\n", _first_line(ExperimentConfig.__doc__) + "\n"]
    parts += [_table(ExperimentConfig, top, "")]
    for name, cls in SECTIONS.items():
        parts += [f"## {name}\n", _first_line(cls.__doc__) + "\n", _table(cls, None, name + ".")]
        if cls is SECTIONS["data"]:
            parts += [_corpora_items()]
        if cls is SECTIONS["model"]:
            parts += [_presets()]
    return "\n".join(parts)


def _table(cls: type, fields: list | None, prefix: str, resume_key: str | None = None) -> str:
    hints = typing.get_type_hints(cls, include_extras=True)
    rows = [HEADER]
    for f in fields if fields is not None else dataclasses.fields(cls):
        base, extras = _split(hints[f.name])
        key = prefix + f.name
        cells = [
            f"`{key}`",
            _type_text(base),
            f"`{_value_text(_default(f))}`",
            _bounds_text(extras),
            _escape(next(e.text for e in extras if isinstance(e, Doc))),
            _resume_text(resume_key or key),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _corpora_items() -> str:
    return "Each item of `data.corpora`:\n\n" + _table(
        CorpusWeight, None, "data.corpora[i].", resume_key="data.corpora"
    )


def _presets() -> str:
    keys = list(dict.fromkeys(k for sizes in MODEL_PRESETS.values() for k in sizes))
    rows = ["| `model.preset` | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, sizes in MODEL_PRESETS.items():
        values = [str(sizes.get(k, "")) for k in keys]
        rows.append(f"| `{name}` | " + " | ".join(values) + " |")
    return "Presets fill the model keys a config does not set:\n\n" + "\n".join(rows) + "\n"


def _split(hint: Any) -> tuple[Any, tuple]:
    if get_origin(hint) is Annotated:
        base, *extras = get_args(hint)
        return base, tuple(extras)
    return hint, ()


def _type_text(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Annotated:
        return _type_text(get_args(hint)[0])
    if origin is Literal:
        return "one of " + ", ".join(f"`{c}`" for c in get_args(hint))
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return f"{_type_text(args[0])} or null"
    if origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
            if dataclasses.is_dataclass(item):
                names = ", ".join(f.name for f in dataclasses.fields(item))
                return f"list of {{{names}}}"
            return f"list of {_type_text(item)}"
        return f"list of {len(args)} {_type_text(args[0])}"
    return hint.__name__


def _bounds_text(extras: tuple) -> str:
    shown = [e.text() for e in extras if isinstance(e, Range)]
    shown += [e.allowed for e in extras if isinstance(e, Pattern)]
    return _escape("; ".join(shown))


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _value_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    if isinstance(value, str):
        return value or '""'
    return repr(value)


def _resume_text(key: str) -> str:
    return "takes effect" if key in TAKES_EFFECT_ON_RESUME else "fixed"


def _first_line(doc: str | None) -> str:
    return " ".join((doc or "").split("\n\n")[0].split())


def _escape(text: str) -> str:
    """Table-cell text: `|` would end the cell, and `<split>` would read as an HTML tag."""
    return re.sub(r"<(?=[A-Za-z/])", "&lt;", text.replace("|", "\\|"))


def main() -> None:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
