"""The Python API, `from nmt import Translator`, on a real (tiny) trained checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOURCES = ["Ein Mann fährt auf einem Fahrrad.", "", "Zwei Hunde spielen im Schnee."]


@pytest.fixture(scope="module")
def translator(tiny_run):
    from nmt import Translator

    return Translator.from_checkpoint(tiny_run.checkpoint)


def test_one_string_gives_one_string(translator):
    """Found broken: a str was iterated, and each character translated as a line."""
    expected = translator.engine.translate([SOURCES[0]]).best[0]
    assert translator.translate(SOURCES[0]) == expected
    assert isinstance(expected, str) and len(expected.split()) > 1


def test_a_list_gives_a_list_in_order(translator):
    assert translator.translate(SOURCES) == translator.engine.translate(SOURCES).best
    assert translator.translate(SOURCES)[1] == ""
    assert translator.translate([]) == []


def test_same_lines_as_the_command_line(translator, tiny_run, nmt_cli, tmp_path):
    result = nmt_cli(
        "translate", tiny_run.checkpoint, cwd=tmp_path, input="\n".join(SOURCES) + "\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:-1] == translator.translate(SOURCES)


def test_device_defaults_to_auto_as_the_cli(translator):
    import torch

    assert translator.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_engine_refuses_a_string(translator):
    with pytest.raises(TypeError, match="list of lines"):
        translator.engine.translate("Ein Hund.")


def test_import_sets_the_cli_memory_policy_before_torch(tiny_run):
    """The API applies nmt.memory's settings as `nmt` does, and before torch is imported."""
    code = (
        "import sys, nmt.memory as m\n"
        "calls = []\n"
        "real = m.configure_cpu_memory\n"
        "m.configure_cpu_memory = lambda: calls.append('torch' in sys.modules) or real()\n"
        "from nmt import Translator\n"
        "assert calls == [False], calls\n"
        f"print(Translator.from_checkpoint({str(tiny_run.checkpoint)!r}, device='cpu')"
        ".translate('Ein Hund.'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_evaluate_takes_the_decoding_options_of_translate(tiny_run, nmt_inline, tmp_path):
    """evaluate --beam-size/--length-penalty/--batch-tokens decode as translate does."""
    from nmt.data.text import read_lines

    sources = read_lines(tiny_run.raw("test_2016_flickr", "de"))[:12]
    (tmp_path / "src.de").write_text("\n".join(sources) + "\n", encoding="utf-8")
    refs = read_lines(tiny_run.raw("test_2016_flickr", "en"))[:12]
    (tmp_path / "ref.en").write_text("\n".join(refs) + "\n", encoding="utf-8")
    options = ("--beam-size", "3", "--length-penalty", "2.0", "--batch-tokens", "64")
    translated = nmt_inline(
        "translate", tiny_run.checkpoint, "-i", "src.de", *options, cwd=tmp_path
    )
    assert translated.returncode == 0, translated.stderr
    scored = nmt_inline(
        *("evaluate", tiny_run.checkpoint, "--src", "src.de", "--ref", "ref.en"),
        *(*options, "-o", "out", "--json"),
        cwd=tmp_path,
    )
    assert scored.returncode == 0, scored.stderr
    hyps = Path(json.loads(scored.stdout)["hypotheses"]).read_text(encoding="utf-8")
    assert hyps == translated.stdout
    plain = nmt_inline("translate", tiny_run.checkpoint, "-i", "src.de", cwd=tmp_path)
    assert plain.stdout != translated.stdout  # the options changed the output: they took effect
