"""`nmt export` from the command line, and `nmt translate` / `nmt evaluate` on its outputs.

One random-weight pre-norm model (shared vocabulary, tied output: the default layout) and
one post-norm model, on real SentencePiece models and real Multi30k sentences.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _cli import assert_clean_failure
from _models import Variant, make_checkpoint

from nmt.checkpoint import load_checkpoint
from nmt.data.tokenizer import EOS_ID
from nmt.decoding.engine import Engine
from nmt.decoding.options import DecodeOptions
from nmt.errors import NmtError
from nmt.interop.ctranslate2 import CTranslate2Engine


def assert_one_line_failure(result, *fragments: str) -> None:
    """assert_clean_failure, and the message is exactly one line."""
    assert_clean_failure(result, *fragments)
    assert result.stderr.count("\n") == 1, result.stderr


PRE = Variant("pre", True, True, "relu")
POST = Variant("post", True, False, "gelu")
LINES = 60


@pytest.fixture(scope="module")
def models(tmp_path_factory, spm_models) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export_cli")
    return {
        "pre": make_checkpoint(root / "pre.pt", PRE, spm_models),
        "post": make_checkpoint(root / "post.pt", POST, spm_models),
        "pre_separate": make_checkpoint(
            root / "pre_separate.pt", Variant("pre", False, True, "relu"), spm_models
        ),
    }


@pytest.fixture(scope="module")
def source_file(tmp_path_factory, test_sentences) -> Path:
    """60 real sentences with an empty line in the middle (one output line each)."""
    lines = test_sentences[:LINES]
    lines[10] = ""
    path = tmp_path_factory.mktemp("text") / "src.de"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory, cli_inline) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exported")
    outs = {
        "ct2": (models["pre"], "ctranslate2"),
        "hf": (models["pre"], "huggingface"),
        "hf_post": (models["post"], "huggingface"),
        "release": (models["pre"], "nmt"),
    }
    paths = {}
    for name, (checkpoint, to) in outs.items():
        out = root / (name + (".pt" if to == "nmt" else ""))
        result = cli_inline("export", checkpoint, "-o", out, "--to", to)
        assert result.returncode == 0, result.stderr
        assert f"in {out}" in result.stderr or str(out) in result.stderr
        paths[name] = out
    fp16 = root / "release16.pt"
    assert (
        cli_inline(
            "export", models["pre"], "-o", fp16, "--to", "nmt", "--precision", "fp16"
        ).returncode
        == 0
    )
    paths["release16"] = fp16
    return paths


def _checkpoint_output(checkpoint: Path, source_file: Path) -> list[str]:
    lines = source_file.read_text(encoding="utf-8").splitlines()
    return Engine.from_checkpoint(checkpoint, DecodeOptions(device="cpu")).translate(lines).best


# --------------------------------------------------------------------------- CTranslate2


def test_translate_with_a_ctranslate2_directory(
    exported, models, source_file, cli_inline, tmp_path
):
    out = tmp_path / "hyp.en"
    result = cli_inline(
        "translate", exported["ct2"], "-i", source_file, "-o", out, "--device", "cpu"
    )
    assert result.returncode == 0, result.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == LINES and lines[10] == ""
    assert lines == _checkpoint_output(models["pre"], source_file)
    assert f"translated {LINES} lines" in result.stderr and "ctranslate2 float32" in result.stderr


def test_evaluate_with_a_ctranslate2_directory(exported, models, source_file, cli_inline, tmp_path):
    ref = tmp_path / "ref.en"
    ref.write_text("A dog runs.\n" * LINES, encoding="utf-8")
    scores = []
    for model in (exported["ct2"], models["pre"]):
        result = cli_inline(
            "evaluate",
            model,
            "--src",
            source_file,
            "--ref",
            ref,
            "--json",
            "--device",
            "cpu",
            "--output",
            tmp_path / model.name,
        )
        assert result.returncode == 0, result.stderr
        scores.append(json.loads(result.stdout)["bleu"]["score"])
    assert scores[0] == scores[1]


@pytest.mark.parametrize("damage", ["flipped bit in model.bin", "missing vocabulary"])
def test_a_damaged_ctranslate2_directory_is_refused_not_decoded(
    exported, source_file, cli_inline, tmp_path, damage
):
    """Found broken: a flipped bit in model.bin translated (and evaluate scored) with the
    damaged weights; the export had no checksums of its own."""
    import shutil

    copy = tmp_path / "ct2"
    shutil.copytree(exported["ct2"], copy)
    if damage == "missing vocabulary":
        (copy / "shared_vocabulary.json").unlink()
        expected = "shared_vocabulary.json is missing"
    else:
        data = bytearray((copy / "model.bin").read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / "model.bin").write_bytes(bytes(data))
        expected = "model.bin does not match the sha256 that nmt export recorded"
    out = tmp_path / "hyp.en"
    result = cli_inline("translate", copy, "-i", source_file, "-o", out, "--device", "cpu")
    assert_one_line_failure(result, expected, "export the checkpoint again")
    assert not out.exists()


def test_int8_export_translates_every_line(models, source_file, cli_inline, tmp_path):
    out = tmp_path / "int8"
    assert (
        cli_inline(
            "export", models["pre"], "-o", out, "--to", "ctranslate2", "--quantize", "int8"
        ).returncode
        == 0
    )
    assert json.loads((out / "config.json").read_text())["add_source_eos"] is True
    lines = source_file.read_text(encoding="utf-8").splitlines()
    translator = CTranslate2Engine.from_directory(out, threads=1)
    assert translator.numerics == "ctranslate2 int8_float32" or "int8" in translator.numerics
    assert len(translator.translate(lines).best) == LINES
    assert (out / "source.spm").is_file() and "translate_batch" in (out / "README.md").read_text()


# --------------------------------------------------------------------------- transformers


def test_transformers_directory_loads_with_auto_classes(exported, models, test_sentences):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    for name, cls in (("hf", "PegasusForConditionalGeneration"), ("hf_post", "MarianMTModel")):
        model = AutoModelForSeq2SeqLM.from_pretrained(exported[name])
        tokenizer = AutoTokenizer.from_pretrained(exported[name])
        assert type(model).__name__ == cls
        nmt_ids = Engine.from_checkpoint(models["pre"]).tokenizer.encode_src(test_sentences)
        assert tokenizer(test_sentences)["input_ids"] == [ids + [EOS_ID] for ids in nmt_ids]
    card = (exported["hf"] / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlanguage:\n- de\n- en\n")
    assert "AutoModelForSeq2SeqLM" in card and "model:\n  preset:" in card


def test_transformers_to_ctranslate2_round_trip(exported, source_file, cli_inline, tmp_path):
    """CTranslate2's own TransformersConverter on the transformers export gives the direct
    export's translations."""
    out = tmp_path / "via_hf"
    result = cli_inline("export", exported["hf"], "-o", out, "--to", "ctranslate2")
    assert result.returncode == 0, result.stderr
    lines = source_file.read_text(encoding="utf-8").splitlines()
    via_hf = CTranslate2Engine.from_directory(out, threads=1).translate(lines).best
    direct = CTranslate2Engine.from_directory(exported["ct2"], threads=1).translate(lines)
    assert via_hf == direct.best


# --------------------------------------------------------------------------- release


def test_release_checkpoint_is_stripped_and_translates_the_same(exported, models, source_file):
    release = load_checkpoint(exported["release"])
    assert {"optimizer", "rng", "train_state"} & set(release) == set()
    assert {"config", "spm", "model", "format_version"} <= set(release)
    half = load_checkpoint(exported["release16"])
    assert all(t.dtype == torch.float16 for t in half["model"].values() if t.is_floating_point())
    weights = [
        sum(t.numel() * t.element_size() for t in c["model"].values()) for c in (release, half)
    ]
    assert weights[1] * 2 == weights[0]
    expected = _checkpoint_output(models["pre"], source_file)
    assert _checkpoint_output(exported["release"], source_file) == expected
    assert len(_checkpoint_output(exported["release16"], source_file)) == LINES


def test_results_of_a_release_checkpoint_name_the_step_it_comes_from(exported):
    """Found broken: evaluate on a release checkpoint recorded step null (its training
    progress is dropped; the step lives in its `release` entry)."""
    from nmt.evaluation.results import identify_checkpoint

    assert load_checkpoint(exported["release"])["release"]["from_step"] == 7
    assert identify_checkpoint(exported["release"]).step == 7


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--to", "huggingface"), ("model.norm=pre", "model.share_embeddings=false")),
        (("--to", "ctranslate2", "--precision", "fp16"), ("--precision", "--quantize float16")),
        (("--to", "nmt", "--quantize", "int8"), ("--quantize applies to --to ctranslate2",)),
    ],
)
def test_refusals_are_one_line(models, cli_inline, tmp_path, args, fragments):
    out = tmp_path / "out"
    result = cli_inline("export", models["pre_separate"], "-o", out, *args)
    assert_one_line_failure(result, *fragments)
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_without_force(models, cli_inline, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_failure(
        cli_inline("export", models["pre"], "-o", out, "--to", "ctranslate2"), "--force"
    )
    assert (
        cli_inline("export", models["pre"], "-o", out, "--to", "ctranslate2", "--force").returncode
        == 0
    )
    assert (out / "model.bin").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left


def test_marian_directory_is_refused_for_ctranslate2(exported, cli_inline, tmp_path):
    result = cli_inline(
        "export", exported["hf_post"], "-o", tmp_path / "out", "--to", "ctranslate2"
    )
    assert_one_line_failure(result, "Marian", "export the nmt checkpoint itself")


@pytest.mark.parametrize(
    ("to", "extra"), [("ctranslate2", "ctranslate2"), ("huggingface", "huggingface")]
)
def test_missing_extra_is_one_line(models, cli_inline, tmp_path, monkeypatch, to, extra):
    import sys

    monkeypatch.setitem(
        sys.modules, "ctranslate2" if extra == "ctranslate2" else "transformers", None
    )
    result = cli_inline("export", models["pre"], "-o", tmp_path / "out", "--to", to)
    assert_one_line_failure(result, f'needs the optional extra: pip install "nmt[{extra}]"')
    assert (
        result.stderr
        == f'error: nmt export --to {to} needs the optional extra: pip install "nmt[{extra}]"\n'
    )


def test_nmt_serve_decodes_a_ctranslate2_directory_as_the_checkpoint(
    exported, models, test_sentences
):
    """nmt serve's model loader takes an export directory: the same translations as the
    checkpoint it came from, also with a request's own search settings."""
    pytest.importorskip("fastapi", reason="nmt serve needs the serve extra")
    from nmt.backends import load_backend
    from nmt.serve.model import ServedModel

    lines = test_sentences[:8]
    cpu = DecodeOptions(device="cpu")
    served = ServedModel(load_backend(exported["ct2"], cpu), name="ct2")
    native = ServedModel(load_backend(models["pre"], cpu), name="pre.pt")
    for options in (DecodeOptions(), DecodeOptions(beam_size=2)):
        ours, theirs = (m.translate(lines, options) for m in (served, native))
        assert [r.texts for r in ours] == [r.texts for r in theirs]
    with pytest.raises(NmtError, match="n-best 2 with a CTranslate2 directory"):
        served.check(DecodeOptions(beam_size=2, n_best=2))
    # LibreTranslate's alternatives are n-best lists: a request the backend cannot serve (4xx)
    from nmt.serve.app import ApiError, _alternatives_options

    with pytest.raises(ApiError, match="alternatives: this server's model gives one") as refused:
        _alternatives_options(2, served)
    assert refused.value.status == 400
    assert _alternatives_options(2, native).n_best == 3


def test_n_best_from_a_ctranslate2_directory_is_refused(exported, source_file, cli_inline):
    result = cli_inline("translate", exported["ct2"], "-i", source_file, "--n-best", "2")
    assert_clean_failure(result, "n-best 2 with a CTranslate2 directory")


def test_an_output_that_appears_while_exporting_is_refused_not_replaced(tmp_path):
    """Two `nmt export ... OUT` at once: both passed the check that OUT does not exist, and
    both exited 0 with one's output replaced by the other's (found by running two)."""
    from nmt.errors import NmtError
    from nmt.interop.export import _staged

    out = tmp_path / "ct2"

    def write(staging: Path) -> None:
        out.mkdir()  # the other process's export lands first
        (out / "model.bin").write_bytes(b"theirs")
        (staging / "model.bin").write_bytes(b"ours")

    with pytest.raises(NmtError, match="appeared while exporting"):
        _staged(out, write, force=False)
    assert (out / "model.bin").read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct2"]  # no staging left
