"""`nmt evaluate`: sacreBLEU's numbers and signatures, of files or of a checkpoint's output.

Known answers come from sacreBLEU itself: its Python API in this process and its own
command-line tool on the same files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu

from nmt.data.text import read_lines


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def sacrebleu_cli(ref: Path, hyp: Path, *flags: str) -> dict[str, dict]:
    """sacreBLEU's command line: {metric name: its JSON record}, scores to 6 decimals."""
    result = subprocess.run(
        [sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-m", "bleu", "chrf"]
        + ["ter", "-w", "6", *flags],
        capture_output=True,
        text=True,
        check=True,
    )
    return {record["name"]: record for record in json.loads(result.stdout)}


@pytest.fixture
def hyp_ref(tiny_run, tmp_path) -> tuple[Path, Path, list[str], list[str]]:
    """Real references and hypotheses made from them: some uppercased (so case matters),
    some shortened, one empty, so every metric lands strictly between its extremes."""
    refs = read_lines(tiny_run.raw("test_2016_flickr", "en"))[:30]
    hyps = []
    for i, ref in enumerate(refs):
        words = ref.split()
        if i == 7:
            hyps.append("")
        elif i % 3 == 0:
            hyps.append(ref.upper())
        elif i % 3 == 1:
            hyps.append(" ".join(words[:-2] + words[-1:]))
        else:
            hyps.append(" ".join(reversed(words[:3])) + " " + " ".join(words[3:]))
    hyp, ref = write(tmp_path / "hyp.en", hyps), write(tmp_path / "ref.en", refs)
    return hyp, ref, hyps, refs


def test_json_scores_are_sacrebleus(hyp_ref, nmt_cli, tmp_path):
    hyp, ref, hyps, refs = hyp_ref
    result = nmt_cli("evaluate", "--hyp", hyp, "--ref", ref, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # exactly one JSON object, nothing else
    assert report["lowercase"] is False
    for name in ("bleu", "chrf", "ter"):
        assert set(report[name]) >= {"score", "signature"}
    assert report["bleu"]["score"] == sacrebleu.corpus_bleu(hyps, [refs]).score
    assert report["chrf"]["score"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert 10 < report["bleu"]["score"] < 90
    cli = sacrebleu_cli(ref, hyp)
    for name, key in (("BLEU", "bleu"), ("chrF2", "chrf"), ("TER", "ter")):
        assert report[key]["score"] == pytest.approx(cli[name]["score"], abs=5e-7), name
        assert report[key]["signature"] == cli[name]["signature"], name
    assert "case:mixed" in report["bleu"]["signature"]


def test_lowercase_scores_are_sacrebleus_lowercased(hyp_ref, nmt_cli, tmp_path):
    hyp, ref, hyps, refs = hyp_ref
    result = nmt_cli("evaluate", "--hyp", hyp, "--ref", ref, "--json", "--lowercase", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    lowered = sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score
    assert report["lowercase"] is True
    assert report["bleu"]["score"] == lowered > sacrebleu.corpus_bleu(hyps, [refs]).score
    assert "case:lc" in report["bleu"]["signature"]
    # sacreBLEU's tool lowercases chrF only with its own flag; TER is case-insensitive anyway.
    cli = sacrebleu_cli(ref, hyp, "--lowercase", "--chrf-lowercase")
    for name, key in (("BLEU", "bleu"), ("chrF2", "chrf"), ("TER", "ter")):
        assert report[key]["score"] == pytest.approx(cli[name]["score"], abs=5e-7), name
        assert report[key]["signature"] == cli[name]["signature"], name


def test_text_report_prints_each_score_with_its_signature(hyp_ref, nmt_cli, tmp_path):
    hyp, ref, hyps, refs = hyp_ref
    result = nmt_cli("evaluate", "--hyp", hyp, "--ref", ref, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    bleu = sacrebleu.metrics.BLEU()
    expected = str(bleu.corpus_score(hyps, [refs]))
    assert result.stdout.splitlines()[0] == expected
    assert f"  signature: {bleu.get_signature()}" in result.stdout.splitlines()


def test_line_count_mismatch_is_a_clear_error(hyp_ref, nmt_cli, assert_clean_failure, tmp_path):
    hyp, _, _, refs = hyp_ref
    short = write(tmp_path / "short.en", refs[:29])
    result = nmt_cli("evaluate", "--hyp", hyp, "--ref", short, "--json", cwd=tmp_path)
    assert_clean_failure(result, "line counts differ", "hyp.en has 30 lines", "short.en has 29")
    assert result.stdout == ""


def test_split_of_a_checkpoint_is_translated_written_and_scored(tiny_run, nmt_cli):
    from nmt.decoding.translator import Translator

    result = nmt_cli(
        "evaluate", tiny_run.checkpoint, "--split", "test_2016_flickr", "--json", cwd=tiny_run.root
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    eval_dir = tiny_run.run_dir / "eval"
    hyp_path = eval_dir / "test_2016_flickr.hyp.en"
    assert Path(report["hypotheses"]) == hyp_path.resolve()
    saved = json.loads((eval_dir / "test_2016_flickr.hyp.en.scores.json").read_text())
    assert saved == report
    hyps = read_lines(hyp_path)
    refs = read_lines(tiny_run.raw("test_2016_flickr", "en"))  # the raw reference
    assert len(hyps) == len(refs) == 40
    assert report["bleu"]["score"] == sacrebleu.corpus_bleu(hyps, [refs]).score > 0
    assert report["chrf"]["score"] == sacrebleu.corpus_chrf(hyps, [refs]).score > 0
    # The hypotheses are the checkpoint's translations of the raw source, beam from its config.
    sources = read_lines(tiny_run.raw("test_2016_flickr", "de"))
    assert hyps == Translator.from_checkpoint(tiny_run.checkpoint).translate(sources).best


def test_a_checkpoint_outside_a_run_writes_its_eval_beside_it(
    tiny_run, nmt_inline, tmp_path_factory
):
    """Not into the checkpoint's grandparent directory (which may be anywhere, or read-only)."""
    root = tmp_path_factory.mktemp("outside")
    models = root / "models"
    models.mkdir()
    checkpoint = models / "model.pt"
    checkpoint.write_bytes(tiny_run.checkpoint.read_bytes())
    result = nmt_inline(
        "evaluate",
        checkpoint,
        *("--split", "test_2016_flickr", "--data-dir", tiny_run.root / "data", "--json"),
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    written = Path(json.loads(result.stdout)["hypotheses"])
    assert written == (models / "eval" / "test_2016_flickr.hyp.en").resolve()
    assert written.is_file() and written.with_name(written.name + ".scores.json").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["models"]


def test_decoding_options_follow_the_config_rules(tiny_run, nmt_inline, assert_clean_failure):
    """The rules of `decode:` in a config, checked once for translate and evaluate alike."""
    result = nmt_inline(
        *("evaluate", tiny_run.checkpoint, "--split", "test_2016_flickr"),
        *("--beam-size", "5000", "--output-dir", "out"),
        cwd=tiny_run.root,
    )
    assert_clean_failure(
        result, "invalid decoding options: --beam-size: 5000 is out of range; allowed >= 1"
    )
    assert not (tiny_run.root / "out").exists()
