"""Write docs/cli.md, the reference of every `nmt` command, from the typer app itself.

    python tools/cli_reference.py

tests/test_docs.py fails when the committed docs/cli.md differs from `render()`, so the page
changes with the options it describes.
"""

from __future__ import annotations

import enum
import inspect
from pathlib import Path

import typer

from nmt.cli import app

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

HEADER = """\
# Command-line reference

Every `nmt` command with its arguments and options, as `nmt COMMAND --help` prints them.
Generated from the command-line code by `python tools/cli_reference.py`; do not edit by hand.
The task guides say when to use which: [README](../README.md#documentation).
"""


def render() -> str:
    """The whole page: the commands in the order `nmt --help` lists them."""
    root = typer.main.get_command(app)
    root_context = typer.Context(root, info_name="nmt")
    sections = [HEADER, _command_list(root, root_context)]
    sections.append(_command_section(("nmt",), root, root_context))
    for path, command, context in _commands(root, root_context):
        sections.append(_command_section(path, command, context))
    return "\n".join(sections)


def _commands(group, context, path=("nmt",)):
    """(path, command, context) of every command below `group`, depth first."""
    for name in group.list_commands(context):
        command = group.commands[name]
        sub_context = typer.Context(command, info_name=name, parent=context)
        if hasattr(command, "commands"):
            yield from _commands(command, sub_context, (*path, name))
        else:
            yield (*path, name), command, sub_context


def _command_list(root, context) -> str:
    lines = ["| command | what it does |", "|---|---|"]
    for path, command, _ in _commands(root, context):
        name = " ".join(path)
        lines.append(f"| [`{name}`](#{_anchor(name)}) | {_cell(_text(_summary(command)))} |")
    return "\n".join(lines) + "\n"


def _command_section(path: tuple[str, ...], command, context) -> str:
    name = " ".join(path)
    usage = " ".join([name, *command.collect_usage_pieces(context)])
    parts = [f"## {name}\n", f"```\n{usage}\n```\n", *_help_paragraphs(command.help or "")]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option" and not p.hidden]
    if arguments:
        parts.append(_parameter_table("argument", arguments, context))
    parts.append(_parameter_table("option", options, context))
    return "\n".join(parts)


def _help_paragraphs(help_text: str) -> list[str]:
    """The command's help as Markdown: a paragraph that click keeps as written (`\\b`) is a
    code block, the others are text."""
    paragraphs = []
    for paragraph in inspect.cleandoc(help_text).split("\n\n"):
        if paragraph.startswith("\b\n"):
            paragraphs.append("```\n" + paragraph[2:] + "\n```\n")
        else:
            paragraphs.append(_text(" ".join(paragraph.split())) + "\n")
    return paragraphs


def _parameter_table(kind: str, params, context) -> str:
    lines = [f"| {kind} | type | default | description |", "|---|---|---|---|"]
    for param in params:
        cells = (_names(param), _type(param, context), _default(param), _description(param))
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _names(param) -> str:
    if param.param_type_name == "argument":
        name = param.metavar or param.name.upper()
        return f"`{name}...`" if param.nargs == -1 else f"`{name}`"
    names = sorted(param.opts, key=len) + param.secondary_opts
    return ", ".join(f"`{name}`" for name in names)


def _type(param, context) -> str:
    """The type as --help shows it, with the choices or the range it allows."""
    text = param.display_type(context).strip("<>")
    choices = param.type_descriptor.choices
    if choices:
        text = "one of " + ", ".join(f"`{_plain(choice)}`" for choice in choices)
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None or high is not None:
        text = text.removesuffix(" range")
    if low is not None and high is not None:
        text += f", {low} to {high}"
    elif low is not None:
        text += f", at least {low}"
    elif high is not None:
        text += f", at most {high}"
    if param.multiple:
        text += " (repeatable)"
    return text


def _default(param) -> str:
    if param.required:
        return "required"
    default = param.default
    if getattr(param, "is_flag", False) and param.secondary_opts:
        flag = param.opts[0] if default else param.secondary_opts[0]
        return f"`{flag}`"
    if default is None or default is False or default == [] or default == ():
        return ""
    if isinstance(default, list | tuple):
        return ", ".join(f"`{_plain(value)}`" for value in default)
    return f"`{_plain(default)}`"


def _description(param) -> str:
    text = " ".join((param.help or "").split())
    if param.envvar:
        text += f" Environment variable: `{param.envvar}`."
    return _text(text)


def _summary(command) -> str:
    return " ".join(inspect.cleandoc(command.help or "").split("\n\n")[0].split())


def _plain(value) -> str:
    return str(value.value if isinstance(value, enum.Enum) else value)


def _text(text: str) -> str:
    """Help text as Markdown: `<TAB>` and `<split>` are words here, not HTML tags, and
    `length**alpha` is a power, not emphasis."""
    return text.replace("<", "\\<").replace("*", "\\*")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading made of words and spaces."""
    return heading.lower().replace(" ", "-")


def main() -> None:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
