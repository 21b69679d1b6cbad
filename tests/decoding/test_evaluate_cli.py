"""`nmt evaluate`: sacreBLEU's numbers and signatures, of files or of a checkpoint's output.

Known answers come from sacreBLEU itself: its Python API in this process and its own
command-line tool on the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch

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
    from nmt.decoding.engine import Engine

    result = nmt_cli(
        "evaluate", tiny_run.checkpoint, "--split", "test_2016_flickr", "--json", cwd=tiny_run.root
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    eval_dir = tiny_run.run_dir / "eval"
    # The result names the checkpoint's bytes, not just a path that training moves on.
    checkpoint = tiny_run.checkpoint.resolve()
    step = torch.load(checkpoint, weights_only=True)["train_state"]["step"]
    assert report["checkpoint"] == {
        "path": str(checkpoint),
        "step": step,
        "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
    }
    hyp_path = Path(report["hypotheses"])
    assert hyp_path.parent == eval_dir.resolve()
    assert re.fullmatch(rf"test_2016_flickr\.step{step}-[0-9a-f]{{8}}\.hyp\.en", hyp_path.name)
    saved = json.loads(hyp_path.with_name(hyp_path.name + ".scores.json").read_text())
    assert saved == report
    recorded = json.loads((eval_dir / "results.json").read_text())["results"]
    assert [(r["split"], r["hypotheses"], r["checkpoint"]) for r in recorded] == [
        ("test_2016_flickr", str(hyp_path), report["checkpoint"])
    ]
    hyps = read_lines(hyp_path)
    refs = read_lines(tiny_run.raw("test_2016_flickr", "en"))  # the raw reference
    assert len(hyps) == len(refs) == 40
    assert report["bleu"]["score"] == sacrebleu.corpus_bleu(hyps, [refs]).score > 0
    assert report["chrf"]["score"] == sacrebleu.corpus_chrf(hyps, [refs]).score > 0
    # The hypotheses are the checkpoint's translations of the raw source, beam from its config.
    sources = read_lines(tiny_run.raw("test_2016_flickr", "de"))
    assert hyps == Engine.from_checkpoint(tiny_run.checkpoint).translate(sources).best


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
    assert written.parent == (models / "eval").resolve()
    assert written.name.startswith("test_2016_flickr.step") and written.name.endswith(".hyp.en")
    assert written.is_file() and written.with_name(written.name + ".scores.json").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["models"]


# --------------------------------------------------------------------------- provenance


def test_scores_of_existing_files_name_both_files_and_their_hashes(hyp_ref, nmt_inline, tmp_path):
    hyp, ref, _, _ = hyp_ref
    result = nmt_inline("evaluate", "--hyp", hyp, "--ref", ref, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["hypotheses"], report["references"]) == (str(hyp), str(ref))
    assert report["files"] == {
        "hypotheses": {"path": str(hyp.resolve()), "sha256": sha256(hyp)},
        "references": {"path": str(ref.resolve()), "sha256": sha256(ref)},
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_results_are_merged_never_written_over(tmp_path):
    """Training's results stay when `nmt evaluate` adds its own; the same evaluation again
    replaces only its own record."""
    from nmt.evaluation.results import record_results

    def result(split: str, sha: str, bleu: float) -> dict:
        hyp = f"{split}.step5-{sha}.hyp.en"
        return {"split": split, "checkpoint": {"sha256": sha}, "hypotheses": hyp, "bleu": bleu}

    training = [result("test_2016", "aaaa", 30.0), result("test_2017", "aaaa", 25.0)]
    record_results(tmp_path, training)
    record_results(tmp_path, [result("test_2016", "bbbb", 31.0)])  # another checkpoint
    record_results(tmp_path, [result("test_2017", "aaaa", 26.0)])  # the same one again
    saved = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [(r["split"], r["checkpoint"]["sha256"], r["bleu"]) for r in saved] == [
        ("test_2016", "aaaa", 30.0),
        ("test_2016", "bbbb", 31.0),
        ("test_2017", "aaaa", 26.0),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # lock note gone


def test_scores_with_another_bleu_tokenizer_are_another_result(tmp_path):
    """`nmt evaluate --tokenize zh` after the default 13a (before: the 13a result was erased,
    as the same split, checkpoint and hypotheses)."""
    from nmt.evaluation.results import record_results

    def result(tokenizer: str, bleu: float) -> dict:
        signature = f"nrefs:1|case:mixed|eff:no|tok:{tokenizer}|smooth:exp|version:2.6.0"
        return {"split": "test", "checkpoint": {"sha256": "aaaa"}, "hypotheses": "t.hyp.zh",
                "cased": {"bleu": {"score": bleu, "signature": signature}}}  # fmt: skip

    for record in (result("13a", 1.0), result("zh", 20.0), result("zh", 21.0)):
        record_results(tmp_path, [record])
    saved = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [r["cased"]["bleu"]["score"] for r in saved] == [1.0, 21.0]


def test_a_checkpoint_replaced_while_it_is_read_is_refused(tiny_run, tmp_path, monkeypatch):
    """Training rewrites best.pt under the same name: the hash taken after loading would
    describe other bytes than those translated with, so the evaluation is refused."""
    from nmt.decoding.engine import Engine
    from nmt.decoding.options import DecodeOptions
    from nmt.errors import DataError
    from nmt.pipeline.evaluate import load_for_evaluation

    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(tiny_run.checkpoint.read_bytes())
    other = tiny_run.step_checkpoints[0].read_bytes()
    load = Engine.from_checkpoint.__func__

    def load_then_training_saves(cls, path, options):
        translator = load(cls, path, options)
        (tmp_path / "new.pt").write_bytes(other)
        os.replace(tmp_path / "new.pt", checkpoint)  # what a save of best.pt does
        return translator

    monkeypatch.setattr(Engine, "from_checkpoint", classmethod(load_then_training_saves))
    with pytest.raises(DataError, match="was replaced while it was read"):
        load_for_evaluation([checkpoint], DecodeOptions(device="cpu"))


def test_decoding_options_follow_the_config_rules(tiny_run, nmt_inline, assert_clean_failure):
    """The rules of `decode:` in a config, checked once for translate and evaluate alike."""
    result = nmt_inline(
        *("evaluate", tiny_run.checkpoint, "--split", "test_2016_flickr"),
        *("--beam-size", "5000", "--output", "out"),
        cwd=tiny_run.root,
    )
    assert_clean_failure(
        result, "invalid decoding options: --beam-size: 5000 is out of range; allowed >= 1"
    )
    assert not (tiny_run.root / "out").exists()


def test_source_files_of_one_name_in_two_folders_keep_both_results(tiny_run, nmt_inline, tmp_path):
    """a/test.de then b/test.de with one checkpoint (before: the same hypothesis file name
    and result key, so the second run overwrote the first's hypotheses and erased its
    record from results.json)."""
    val_de = read_lines(tiny_run.raw("val", "de"))
    val_en = read_lines(tiny_run.raw("val", "en"))
    for folder, lines in (("a", slice(0, 3)), ("b", slice(3, 5))):
        (tmp_path / folder).mkdir()
        write(tmp_path / folder / "test.de", val_de[lines])
        write(tmp_path / folder / "test.en", val_en[lines])
    hypotheses = {}
    for folder in ("a", "b"):
        result = nmt_inline(
            "evaluate", tiny_run.checkpoint, "--src", f"{folder}/test.de",
            "--ref", f"{folder}/test.en", "--output", "out", "--json", "--beam-size", "1",
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        hypotheses[folder] = Path(json.loads(result.stdout)["hypotheses"])
    assert hypotheses["a"] != hypotheses["b"]
    assert [len(read_lines(hypotheses[f])) for f in "ab"] == [3, 2]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert sorted(r["source"] for r in saved) == ["a/test.de", "b/test.de"]
