"""`nmt import huggingface` from the command line: the checkpoint it writes translates and
evaluates like any other (and exports to CTranslate2 with the same outputs); every refusal
is one `error:` line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from _cli import assert_clean_failure
from _marian import Opus, make_marian_dir

from nmt.decoding.engine import Engine
from nmt.decoding.options import DecodeOptions
from nmt.interop.ctranslate2 import CTranslate2Engine

LINES = 30


def assert_one_line_failure(result, *fragments: str) -> None:
    assert_clean_failure(result, *fragments)
    assert result.stderr.count("\n") == 1, result.stderr


@pytest.fixture(scope="module")
def marian(tmp_path_factory, spm_models) -> Path:
    return make_marian_dir(tmp_path_factory.mktemp("cli") / "opus", Opus(True, True), spm_models)


@pytest.fixture(scope="module")
def imported(marian, tmp_path_factory, cli_inline) -> Path:
    out = tmp_path_factory.mktemp("imported") / "opus.pt"
    result = cli_inline("import", "huggingface", marian, "-o", out)
    assert result.returncode == 0, result.stderr
    assert f"imported {marian} (marian, de -> en) as {out}" in result.stderr
    return out


@pytest.fixture(scope="module")
def source_file(tmp_path_factory, test_sentences) -> Path:
    path = tmp_path_factory.mktemp("text") / "src.de"
    path.write_text("\n".join(test_sentences[:LINES]) + "\n", encoding="utf-8")
    return path


def test_translate_and_evaluate_read_the_imported_checkpoint(
    imported, source_file, cli_inline, tmp_path
):
    out = tmp_path / "out.en"
    result = cli_inline("translate", imported, "-i", source_file, "-o", out, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    expected = Engine.from_checkpoint(imported).translate(
        source_file.read_text(encoding="utf-8").splitlines()
    )
    assert out.read_text(encoding="utf-8").splitlines() == expected.best
    result = cli_inline(
        "evaluate", imported, "--src", source_file, "--ref", out, "--json", "--device", "cpu",
        "--output", tmp_path / "eval",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # its own output as the reference (chrF: the random model's short lines have no 4-grams)
    assert json.loads(result.stdout)["chrf"]["score"] == pytest.approx(100.0), result.stdout


def test_an_imported_model_exports_to_ctranslate2_with_the_same_outputs(
    imported, source_file, cli_inline, tmp_path
):
    """swish and the output bias in CTranslate2's spec."""
    out = tmp_path / "ct2"
    result = cli_inline("export", imported, "-o", out, "--to", "ctranslate2")
    assert result.returncode == 0, result.stderr
    lines = source_file.read_text(encoding="utf-8").splitlines()
    ours = Engine.from_checkpoint(imported, DecodeOptions(max_len_a=0, max_len_b=40)).translate(
        lines
    )
    theirs = CTranslate2Engine.from_directory(
        out, DecodeOptions(max_len_a=0, max_len_b=40), threads=1
    ).translate(lines)
    assert theirs.best == ours.best


# --------------------------------------------------------------------------- refusals


def test_not_a_directory(tmp_path, cli_inline):
    path = tmp_path / "model.bin"
    path.write_text("x")
    result = cli_inline("import", "huggingface", path, "-o", tmp_path / "x.pt")
    assert_one_line_failure(result, f"{path} is not a directory")
    result = cli_inline("import", "huggingface", tmp_path / "absent", "-o", tmp_path / "x.pt")
    assert_one_line_failure(result, "is not a directory")


@pytest.mark.parametrize(
    "model_type, fragment",
    [("bert", "model_type 'bert' is not supported; supported: marian"), (None, "model_type None")],
)
def test_unknown_model_type(model_type, fragment, tmp_path, cli_inline):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    result = cli_inline("import", "huggingface", tmp_path, "-o", tmp_path / "x.pt")
    assert_one_line_failure(result, str(tmp_path / "config.json"), fragment)


def test_a_directory_without_config(tmp_path, cli_inline):
    result = cli_inline("import", "huggingface", tmp_path, "-o", tmp_path / "x.pt")
    assert_one_line_failure(result, "config.json is missing")


@pytest.mark.parametrize("missing", ["vocab.json", "target.spm"])
def test_missing_tokenizer_files(missing, marian, tmp_path, cli_inline):
    copy = tmp_path / "copy"
    shutil.copytree(marian, copy)
    (copy / missing).unlink()
    out = tmp_path / "x.pt"
    result = cli_inline("import", "huggingface", copy, "-o", out)
    assert_one_line_failure(result, f"missing tokenizer file(s) {missing}")
    assert not out.exists()


def test_what_nmt_cannot_represent_is_named(marian, tmp_path, cli_inline):
    copy = tmp_path / "copy"
    shutil.copytree(marian, copy)
    config = json.loads((copy / "config.json").read_text())
    config.update(scale_embedding=False, activation_function="gelu_new")
    (copy / "config.json").write_text(json.dumps(config))
    result = cli_inline("import", "huggingface", copy, "-o", tmp_path / "x.pt")
    assert_one_line_failure(result, "scale_embedding is false", "'gelu_new'")


def test_transformers_missing(marian, tmp_path, cli_inline, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if absent
    result = cli_inline("import", "huggingface", marian, "-o", tmp_path / "x.pt")
    assert_one_line_failure(result, 'pip install "nmt[huggingface]"')


def test_an_existing_output_needs_force(marian, imported, tmp_path, cli_inline):
    out = tmp_path / "x.pt"
    out.write_text("keep me")
    result = cli_inline("import", "huggingface", marian, "-o", out)
    assert_one_line_failure(result, "exists; remove it or pass --force")
    assert out.read_text() == "keep me"
    assert cli_inline("import", "huggingface", marian, "-o", out, "--force").returncode == 0
    assert out.read_bytes() != b"keep me"


def test_a_damaged_sentencepiece_model_is_named(marian, tmp_path, cli_inline):
    copy = tmp_path / "copy"
    shutil.copytree(marian, copy)
    (copy / "target.spm").write_bytes(b"\x00garbage" * 10)
    result = cli_inline("import", "huggingface", copy, "-o", tmp_path / "x.pt")
    assert_one_line_failure(result, f"{copy / 'target.spm'}: not a SentencePiece model")


def test_a_model_with_a_nan_weight_is_refused_not_imported(marian, tmp_path, cli_inline):
    """The import reads the whole model: a non-finite weight is named, nothing is written
    (translating it would give empty lines)."""
    from transformers import MarianMTModel

    model = MarianMTModel.from_pretrained(marian)
    with torch.no_grad():
        model.model.encoder.layers[0].final_layer_norm.weight[0] = float("nan")
    copy = tmp_path / "copy"
    shutil.copytree(marian, copy)
    model.save_pretrained(copy)
    out = tmp_path / "x.pt"
    result = cli_inline("import", "huggingface", copy, "-o", out)
    assert_one_line_failure(result, str(copy), "holds 1 non-finite values (NaN or inf)")
    assert not out.exists()
