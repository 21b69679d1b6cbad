"""The CLI as users run it: a real subprocess, exit codes, one message, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _cli import assert_clean_failure


def nmt(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nmt.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_import_and_help_do_not_import_datasets(tmp_path):
    code = "import sys, nmt, nmt.cli, nmt.config; assert 'datasets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    result = nmt("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("download", "prepare"):
        assert command in result.stdout


def test_download_and_prepare_from_the_mirror(tmp_path, small_mirror):
    result = nmt(
        "download", "multi30k", "--langs", "de,en", "--mirror", str(small_mirror), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "train.de" in result.stdout and "400 lines" in result.stdout
    config = tmp_path / "c.yaml"
    config.write_text("name: c\ndata:\n  vocab_size: 400\n  test_splits: [test_2016_flickr]\n")
    result = nmt("prepare", str(config), "model.preset=tiny", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "vocabulary: joint, source 400, target 400" in result.stdout
    resolved = (tmp_path / "runs" / "c" / "config.yaml").read_text()
    assert "preset: tiny" in resolved and "d_model: 64" in resolved


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["download", "nope"], ["unknown corpus 'nope'"]),
        (
            ["download", "multi30k", "--langs", "de,xx", "--mirror", "."],
            ["has no language 'xx'", "valid languages"],
        ),
        (["prepare", "missing.yaml"], ["config file not found: missing.yaml"]),
        (["prepare", "bad.yaml"], ["malformed YAML at line 3, column 1", "bad.yaml"]),
        (["prepare", "ok.yaml", "train.lrr=1"], ["train.lrr: unknown key; did you mean train.lr?"]),
        (["prepare", "ok.yaml"], ["corpus file not found", "nmt download multi30k"]),
    ],
)
def test_bad_input_gives_one_clear_message(tmp_path, args, fragments):
    (tmp_path / "bad.yaml").write_text("train:\n  lr: [1\n")
    (tmp_path / "ok.yaml").write_text("name: ok\n")
    assert_clean_failure(nmt(*args, cwd=tmp_path), *fragments)


def test_invalid_utf8_corpus_is_named_with_its_line(tmp_path):
    (tmp_path / "a.de").write_bytes(b"gut\n\xc3\x28 kaputt\n")
    (tmp_path / "a.en").write_text("good\nbroken\n")
    result = nmt(
        "download",
        "mine",
        "--src",
        "a.de",
        "--tgt",
        "a.en",
        "--src-lang",
        "de",
        "--tgt-lang",
        "en",
        cwd=tmp_path,
    )
    assert_clean_failure(result, "a.de: line 2 is not valid UTF-8")
