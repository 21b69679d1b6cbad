"""One command-line convention, checked over every command (the typer app as click sees
it): what a command writes is named `-o/--output`; one name per concept (`--quantize`,
`--precision`, `--device`, the MODEL argument); options of one name take the same values."""

from __future__ import annotations

import typer.main

from nmt.cli import app

# What each command writes (a file, a directory, or stdout by default).
WRITERS = {"translate", "score", "evaluate", "export", "average", "plot", "import huggingface"}
# Commands that take a model to decode with: the argument is MODEL everywhere.
MODEL_TAKERS = {"translate", "score", "evaluate", "export", "serve"}
# Names that other commands would spell differently for the same concept.
SYNONYMS = {
    "--output-dir": "--output",
    "--out": "--output",
    "--quantization": "--quantize",
    "--fp16": "--precision fp16",
    "--checkpoint": "the MODEL argument",
    "--model": "the MODEL argument",
    "--beam": "--beam-size",
    "--nbest": "--n-best",
}


def commands() -> dict:
    """Every leaf command by its full name (`import huggingface`), as click objects (typer
    carries its own copy of click: they are told apart by what they hold, not their class)."""
    found: dict = {}

    def walk(command, prefix: str) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            found[prefix] = command

    walk(typer.main.get_command(app), "")
    return found


def options(command) -> list:
    return [p for p in command.params if p.param_type_name == "option"]


def test_every_writer_names_its_output_dash_o_output():
    found = commands()
    assert set(found) >= WRITERS, sorted(found)
    for name, command in found.items():
        for option in options(command):
            names = set(option.opts)
            if names & {"-o", "--output"}:
                assert names == {"-o", "--output"}, (name, option.opts)
        has_output = any("--output" in o.opts for o in options(command))
        assert has_output == (name in WRITERS), name


def test_one_name_per_concept():
    for name, command in commands().items():
        for option in options(command):
            for spelled in option.opts + option.secondary_opts:
                assert spelled not in SYNONYMS, f"{name} {spelled}: use {SYNONYMS[spelled]}"


def test_the_model_argument_is_model_everywhere():
    for name in MODEL_TAKERS:
        arguments = [p for p in commands()[name].params if p.param_type_name == "argument"]
        assert [a.metavar for a in arguments][:1] == ["MODEL"], name


def test_options_of_one_name_take_the_same_values():
    """--device, --precision, --beam-size... mean one thing: the same type and choices
    wherever they appear (not --output: a file here, a directory there; export's --quantize
    names CTranslate2's weight types, a concept of its own target, and its --precision is
    checked against the release format)."""
    seen: dict[str, tuple] = {}
    for name, command in commands().items():
        if name == "export":
            continue
        for option in options(command):
            if "--output" in option.opts:
                continue
            values = _values(option.type_descriptor.annotation)
            first = seen.setdefault(option.opts[-1], (name, values))
            assert first[1] == values, (option.opts[-1], first, (name, values))


def _values(annotation) -> object:
    """An option's type as a comparable value: the choices of an Enum, else the type (of
    one item, for a repeatable option)."""
    import enum
    import typing

    if typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation)

    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return tuple(member.value for member in annotation)
    return annotation
