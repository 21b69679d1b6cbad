"""The decoding toolbox's shared contract, with the session's tiny model through the command
line: N lines in, N lines out (N * n-best rows) under every option and their combinations
(sampling, target prefixes, ensembles, n-best), for translate and evaluate; each invalid
combination refused in one line, writing nothing; evaluate with an ensemble or prefixes
records every model and the prefixes it decoded with."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from nmt.data.text import read_lines
from nmt.decoding.options import DecodeOptions
from tests._cli import assert_clean_failure

# Empty and blank lines among real ones: they must keep their place (and stay empty).
SOURCE = ["Ein Hund rennt über die Wiese.", "", "Zwei Männer gehen.", "  ", "Eine Frau singt."]
PREFIXES = ["A dog", "A", "", "", "The woman"]  # an empty source with a prefix is decoded


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    source, prefixes = tmp_path / "in.de", tmp_path / "prefix.en"
    source.write_text("".join(line + "\n" for line in SOURCE), encoding="utf-8")
    prefixes.write_text("".join(line + "\n" for line in PREFIXES), encoding="utf-8")
    return {"source": source, "prefixes": prefixes, "out": tmp_path / "out.en"}


def models(tiny_run, ensemble: bool) -> list[Path]:
    """One checkpoint, or an ensemble of the last and the first step checkpoint."""
    first = tiny_run.step_checkpoints[0]
    return [tiny_run.checkpoint, first] if ensemble else [tiny_run.checkpoint]


OPTIONS = {
    "beam": [],
    "greedy": ["--beam-size", "1"],
    "n-best": ["--n-best", "2"],
    "topk": ["--sampling", "topk:3", "--seed", "1"],
    "topp": ["--sampling", "topp:0.9", "--temperature", "0.7"],
    "random": ["--sampling", "random"],
    "prefix": ["--prefix-file", "{prefixes}"],
    "prefix n-best": ["--prefix-file", "{prefixes}", "--n-best", "2"],
    "prefix sampling": ["--prefix-file", "{prefixes}", "--sampling", "topk:2"],
}


@pytest.mark.parametrize("ensemble", [False, True], ids=["one model", "ensemble"])
@pytest.mark.parametrize("case", list(OPTIONS))
def test_translate_gives_n_lines_for_n_under_every_option(
    tiny_run, nmt_inline, files, case, ensemble
):
    options = [o.format(prefixes=files["prefixes"]) for o in OPTIONS[case]]
    result = nmt_inline(
        "translate", *models(tiny_run, ensemble), "-i", files["source"], "-o", files["out"],
        "--device", "cpu", *options, cwd=files["out"].parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = files["out"].read_text(encoding="utf-8").split("\n")
    assert rows.pop() == ""  # every row ends in \n
    n_best = 2 if "n-best" in case else 1
    assert len(rows) == n_best * len(SOURCE)
    if n_best > 1:  # index<TAB>score<TAB>text, each input's rows together
        assert [int(r.split("\t")[0]) for r in rows] == [i for i in range(5) for _ in "ab"]
        rows = [r.split("\t", 2)[2] for r in rows]
    texts = [rows[i * n_best : (i + 1) * n_best] for i in range(len(SOURCE))]
    prefixes = PREFIXES if "prefix" in case else [""] * len(SOURCE)
    for source, prefix, outputs in zip(SOURCE, prefixes, texts):
        for text in outputs:
            assert text.startswith(prefix), (prefix, text)
            if not source.strip() and not prefix:
                assert text == ""  # empty in, empty out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sampling", "topk:5", "--beam-size", "4"], "give --beam-size 1 or leave it out"),
        (["--sampling", "random", "--n-best", "2"], "--n-best 2 cannot apply"),
        (["--prefix-file", "{short}"], "has 2 lines but the input ({source}) has 5"),
        (["--n-best", "3", "--beam-size", "2"], "--n-best (3) must be <= --beam-size (2)"),
        (["{other}"], "their SentencePiece models differ"),
    ],
    ids=["sampling beam", "sampling n-best", "prefix count", "n-best > beam", "tokenizers"],
)
def test_translate_refuses_each_invalid_combination_in_one_line(
    tiny_run, other_tokenizer_checkpoint, nmt_inline, files, args, message
):
    short = files["out"].parent / "short.en"
    short.write_text("A\nB\n", encoding="utf-8")
    names = {"short": short, "other": other_tokenizer_checkpoint, "source": files["source"]}
    args = [a.format(**names) for a in args]
    result = nmt_inline(
        "translate", tiny_run.checkpoint, *args, "-i", files["source"], "-o", files["out"],
        "--device", "cpu", cwd=files["out"].parent,
    )  # fmt: skip
    assert_clean_failure(result, message.format(**names))
    assert not files["out"].exists()


# --------------------------------------------------------------------------- evaluate


def evaluate(nmt_inline, checkpoints, files, *options) -> dict:
    reference = files["out"].parent / "ref.en"
    reference.write_text("A dog runs.\n\nTwo men walk.\n\nA woman sings.\n", encoding="utf-8")
    result = nmt_inline(
        "evaluate", *checkpoints, "--src", files["source"], "--ref", reference, "--json",
        "--device", "cpu", "-o", files["out"].parent / "eval", *map(str, options),
        cwd=files["out"].parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def identity(path: Path) -> dict:
    import torch

    step = torch.load(path, weights_only=True, mmap=True)["train_state"]["step"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"path": str(path.resolve()), "step": step, "sha256": digest}


def test_evaluate_an_ensemble_records_every_model(tiny_run, nmt_inline, files):
    from nmt.decoding.engine import Engine

    pair = models(tiny_run, ensemble=True)
    report = evaluate(nmt_inline, pair, files)
    assert report["ensemble"] == [identity(p) for p in pair]
    assert report["checkpoint"] == identity(pair[0])  # whose decoding settings it used
    hyps = read_lines(Path(report["hypotheses"]))
    expected = Engine.from_checkpoints(pair, DecodeOptions(device="cpu")).translate(SOURCE).best
    assert hyps == expected and len(hyps) == len(SOURCE)
    alone = evaluate(nmt_inline, pair[:1], files)
    assert "ensemble" not in alone and alone["hypotheses"] != report["hypotheses"]
    recorded = json.loads((files["out"].parent / "eval" / "results.json").read_text())
    assert [r.get("ensemble") for r in recorded["results"]] == [report["ensemble"], None]


def test_evaluate_with_prefixes_records_them(tiny_run, nmt_inline, files):
    free = evaluate(nmt_inline, [tiny_run.checkpoint], files)
    forced = evaluate(nmt_inline, [tiny_run.checkpoint], files, "--prefix-file", files["prefixes"])
    assert forced["prefixes"] == {
        "path": str(files["prefixes"].resolve()),
        "sha256": hashlib.sha256(files["prefixes"].read_bytes()).hexdigest(),
    }
    assert "prefixes" not in free and forced["hypotheses"] != free["hypotheses"]
    hyps = read_lines(Path(forced["hypotheses"]))
    assert len(hyps) == len(SOURCE)
    assert all(h.startswith(p) for h, p in zip(hyps, PREFIXES))


@pytest.mark.parametrize(
    "args, message",
    [
        (["{ckpt}", "--prefix-file", "{short}"], "has 2 lines but the input ({source}) has 5"),
        (["{ckpt}", "--sampling", "topk:5", "--beam-size", "4"], "give --beam-size 1"),
        (["{ckpt}", "{other}"], "their SentencePiece models differ"),
        (["{ckpt}", "--src", "-", "--prefix-file", "-"], "--src and --prefix-file are both -"),
        (["{ckpt}", "--hyp", "{source}"], "--hyp scores existing output: leave out the"),
        (["--hyp", "{source}", "--beam-size", "4"], "--beam-size applies only when translating"),
        (["--hyp", "{source}", "--prefix-file", "{short}"], "--prefix-file applies only when"),
    ],
    ids=[
        "prefix count",
        "sampling beam",
        "tokenizers",
        "two stdins",
        "hyp ckpt",
        "hyp beam",
        "hyp prefix",
    ],  # fmt: skip
)
def test_evaluate_refuses_each_invalid_combination_in_one_line(
    tiny_run, other_tokenizer_checkpoint, nmt_inline, files, args, message
):
    work = files["out"].parent
    short = work / "short.en"
    short.write_text("A\nB\n", encoding="utf-8")
    names = {
        "ckpt": tiny_run.checkpoint,
        "short": short,
        "other": other_tokenizer_checkpoint,
        "source": files["source"],
    }
    args = [a.format(**names) for a in args]
    if "--src" not in args and "--hyp" not in args:
        args += ["--src", str(files["source"])]
    result = nmt_inline(
        "evaluate", *args, "--ref", files["source"], "--device", "cpu", "-o", work / "eval",
        cwd=work,
    )  # fmt: skip
    assert_clean_failure(result, message.format(**names))
    assert not (work / "eval").exists()
