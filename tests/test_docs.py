"""The documentation stays true: the generated CLI reference matches the app, `--help` is never
cut at 80 columns, every relative link leads somewhere, and the README's quickstart runs as
written."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nmt.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _read(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _commands(group, path=()):
    """Every command path below the click group, e.g. ("import", "huggingface")."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def _groups(group, path=()):
    yield path, group
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _groups(command, (*path, name))


ROOT = typer.main.get_command(app)
COMMANDS = dict(_commands(ROOT))
GROUPS = dict(_groups(ROOT))


def test_the_cli_reference_is_generated_from_the_app():
    render = runpy.run_path(str(REPO / "tools" / "cli_reference.py"))["render"]
    committed = _read(REPO / "docs" / "cli.md")
    assert committed == render(), "docs/cli.md is stale: run `python tools/cli_reference.py`"


def _help_at_80_columns(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def _squashed(text: str) -> str:
    """Without whitespace or the lines of rich's boxes: wrapping may break a line anywhere,
    even after a hyphen, and may draw a border between the pieces."""
    return "".join(text.translate(str.maketrans("", "", "│╭╮╰╯─")).split())


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_option_help_is_whole_at_80_columns(path):
    output = _help_at_80_columns(path)
    assert "…" not in output
    assert max(map(len, output.splitlines())) <= 80, output
    for param in COMMANDS[path].params:
        if param.help:
            assert _squashed(param.help) in _squashed(output), (param.name, output)


@pytest.mark.parametrize("path", sorted(GROUPS), ids=lambda path: " ".join(path) or "nmt")
def test_command_summaries_are_whole_at_80_columns(path):
    output = _help_at_80_columns(path)
    assert max(map(len, output.splitlines())) <= 80, output
    for name, command in GROUPS[path].commands.items():
        summary = (command.help or "").split("\n\n")[0]
        assert _squashed(summary) in _squashed(output), (name, output)


def _links(markdown: str) -> list[str]:
    """Targets of [text](target) and ![alt](target) outside fenced code blocks."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    return re.findall(r"\]\(([^)\s]+)\)", prose)


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings (a repeated heading gets -1, -2, ...)."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    anchors: set[str] = set()
    for heading in re.findall(r"^#+ (.+)$", prose, flags=re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        suffix = 0
        while (anchor if not suffix else f"{anchor}-{suffix}") in anchors:
            suffix += 1
        anchors.add(anchor if not suffix else f"{anchor}-{suffix}")
    return anchors


@pytest.mark.parametrize("page", DOCS, ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_lead_to_files_and_headings_that_exist(page):
    broken = []
    for link in _links(_read(page)):
        if re.match(r"[a-z]+:", link):  # https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(_read(target)):
            broken.append(f"{link}: no such heading in {target.name}")
    assert not broken, f"{page.relative_to(REPO)}: {broken}"


def _quickstart_block() -> str:
    readme = _read(REPO / "README.md")
    section = readme.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)


def test_the_quickstart_is_two_commands_near_the_top():
    readme = _read(REPO / "README.md")
    commands = _quickstart_block().strip().splitlines()
    assert [line.split()[0] for line in commands] == ["nmt", "echo"], commands
    assert "configs/tiny.yaml" in commands[0]
    assert readme.index(commands[0]) < len("\n".join(readme.splitlines()[:60]))


@pytest.mark.slow
def test_the_readme_quickstart_runs_as_written(tmp_path, shared_data):
    """The quickstart's code block in a fresh directory with the repository's configs: `nmt`
    is this checkout's command line, the corpus comes from the shared mirror."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nmt").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m nmt.cli "$@"\n')
    (bin_dir / "nmt").chmod(0o755)
    work = tmp_path / "clone"
    work.mkdir()
    (work / "configs").symlink_to(REPO / "configs")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "NMT_DATA_MIRROR": str(shared_data),
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _quickstart_block()],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "test_2016_flickr: BLEU" in result.stdout + result.stderr
    translation = result.stdout.strip().splitlines()[-1]
    assert translation and not translation.startswith("translated "), result.stdout
