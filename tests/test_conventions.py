"""What a new user expects of a command line: --version, shell completion, short options,
`-` for stdin, and text files read the same whatever editor wrote them (BOM, CRLF)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _cli import assert_clean_failure

import nmt

HYPS = ["A dog runs in a park .", "Two men are riding bikes .", "A woman reads a book ."]
REFS = ["A dog runs through a park .", "Two men ride bikes .", "A woman is reading a book ."]


def nmt_process(*args, cwd: Path, input: bytes | None = None, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", "nmt.cli", *map(str, args)],
        cwd=cwd,
        input=input,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=120,
    )


def test_import_nmt_and_help_do_not_import_torch(tmp_path):
    code = (
        "import sys, nmt, nmt.cli; from nmt.cli import app; "
        "assert 'torch' not in sys.modules and 'datasets' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_version(tmp_path):
    result = nmt_process("--version", cwd=tmp_path)
    assert (result.returncode, result.stdout.decode()) == (0, f"nmt {nmt.__version__}\n")


def nmt_script(*args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """The installed `nmt` entry point (completion scripts are keyed by the program name)."""
    script = Path(sys.executable).with_name("nmt")
    if not script.exists():
        pytest.skip(f"no nmt entry point beside {sys.executable} (pip install -e .)")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    # Run from a bash that stays its parent (`; exit` stops bash from exec'ing it), as a
    # user's shell would be: typer finds the shell by walking up the process tree, and a
    # test runner started in the background may have no shell above it at all.
    command = ["bash", "-c", '"$@"; exit $?', "bash", str(script), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, env=environment, timeout=120)


def test_shell_completion_without_a_terminal(tmp_path):
    """--show-completion names the shell; outside an interactive shell it must still answer
    (or refuse in one line), never with a traceback."""
    for shell in ("bash", "zsh", "fish"):
        result = nmt_script("--show-completion", shell, cwd=tmp_path, env={})
        assert result.returncode == 0, result.stderr
        assert b"_NMT_COMPLETE" in result.stdout, result.stdout
    bare = nmt_script("--show-completion", cwd=tmp_path, env={"SHELL": ""})
    assert b"Traceback" not in bare.stderr + bare.stdout
    # The completion itself: the commands, as bash asks for them.
    completion = nmt_script(
        cwd=tmp_path,
        env={"_NMT_COMPLETE": "complete_bash", "COMP_WORDS": "nmt tr", "COMP_CWORD": "1"},
    )
    assert completion.returncode == 0, completion.stderr
    assert set(completion.stdout.decode().split()) >= {"train", "translate"}


@pytest.mark.parametrize(
    "command, short, long",
    [
        ("translate", "-i", "--input"),
        ("translate", "-o", "--output"),
        ("evaluate", "-o", "--output"),
        ("average", "-o", "--output"),
        ("plot", "-o", "--output"),
    ],
)
def test_short_options(cli_inline, command, short, long):
    result = cli_inline(command, "--help")
    assert result.returncode == 0
    assert any(short in line and long in line for line in result.stdout.splitlines()), result.stdout


def write(path: Path, lines: list[str], *, bom: bool = False, ending: str = "\n") -> Path:
    path.write_bytes(
        (b"\xef\xbb\xbf" if bom else b"") + "".join(x + ending for x in lines).encode()
    )
    return path


def test_bom_hypothesis_scores_like_the_same_text_without(tmp_path, cli_inline, monkeypatch):
    """Found broken: identical text scored BLEU 90 when one file began with a UTF-8 BOM."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "hyp.en", REFS, bom=True)
    write(tmp_path / "ref.en", REFS)
    result = cli_inline("evaluate", "--hyp", "hyp.en", "--ref", "ref.en", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bleu"]["score"] == pytest.approx(100.0)
    assert report["chrf"]["score"] == pytest.approx(100.0)
    assert report["ter"]["score"] == pytest.approx(0.0)
    write(tmp_path / "ref.en", REFS, bom=True, ending="\r\n")  # BOM and CRLF on both sides
    result = cli_inline("evaluate", "--hyp", "hyp.en", "--ref", "ref.en", "--json")
    assert json.loads(result.stdout)["bleu"]["score"] == pytest.approx(100.0)


def test_evaluate_reads_the_hypotheses_from_stdin(tmp_path):
    import sacrebleu

    write(tmp_path / "ref.en", REFS)
    text = ("\ufeff" + "\n".join(HYPS) + "\n").encode()  # a BOM on stdin too
    result = nmt_process(
        "evaluate", "--hyp", "-", "--ref", "ref.en", "--json", cwd=tmp_path, input=text
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bleu"]["score"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    # and the reference, with the hypotheses in a file
    write(tmp_path / "hyp.en", HYPS)
    result = nmt_process(
        "evaluate",
        "--hyp",
        "hyp.en",
        "--ref",
        "-",
        "--json",
        cwd=tmp_path,
        input=b"\n".join(r.encode() for r in REFS),
    )
    assert json.loads(result.stdout)["bleu"]["score"] == pytest.approx(report["bleu"]["score"])


def test_only_one_input_can_be_stdin(tmp_path):
    result = nmt_process("evaluate", "--hyp", "-", "--ref", "-", cwd=tmp_path, input=b"a\n")
    result = subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )
    assert_clean_failure(result, "--hyp and --ref are both - (stdin)")
