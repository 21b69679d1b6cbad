"""`nmt plot RUN_DIR...`: the figure's data (one series per run and panel, resume marks at
the updates a run resumed from), checked on hand-written logs and on a real resumed run; the
command line overlaying two runs; a bad run directory among several refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nmt.plotting import legend_names, run_curves


def write_run(run: Path, records: list[dict]) -> Path:
    run.mkdir(parents=True)
    lines = [json.dumps({"time": 0.0} | r) for r in records]
    (run / "metrics.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return run


# A run logged every 2 updates, validated at 4 and 8, resumed from update 4 (the checkpoint
# after 300 s of training), the training records after it continuing its elapsed time.
RESUMED = [
    {"kind": "train", "step": 2, "loss": 9.0, "elapsed_s": 120.0},
    {"kind": "train", "step": 4, "loss": 8.0, "elapsed_s": 300.0},
    {"kind": "valid", "step": 4, "loss": 7.5, "ppl": 900.0, "bleu": 1.0, "elapsed_s": 300.0},
    {"kind": "resume", "step": 4, "elapsed_s": 300.0, "checkpoint": "c/step_4.pt"},
    {"kind": "train", "step": 6, "loss": 7.0, "elapsed_s": 420.0},
    {"kind": "train", "step": 8, "loss": 6.0, "elapsed_s": 540.0},
    {"kind": "valid", "step": 8, "loss": 6.5, "ppl": 300.0, "bleu": 3.0, "elapsed_s": 540.0},
]


def test_a_runs_series_and_resume_marks(tmp_path):
    curves = run_curves(write_run(tmp_path / "base", RESUMED))
    assert curves.name == "base"
    loss, ppl, bleu = (curves.series[key] for key in ("loss", "ppl", "bleu"))
    assert (loss.steps, loss.values) == ([2, 4, 6, 8], [9.0, 8.0, 7.0, 6.0])
    assert loss.minutes == [2.0, 5.0, 7.0, 9.0]
    assert (ppl.steps, ppl.values, ppl.minutes) == ([4, 8], [900.0, 300.0], [5.0, 9.0])
    assert (bleu.steps, bleu.values) == ([4, 8], [1.0, 3.0])
    assert (curves.resumed_at, curves.resumed_minutes) == ([4], [5.0])
    assert {s.run for s in curves.series.values()} == {"base"}


def test_a_run_never_resumed_has_no_marks_and_a_run_without_bleu_an_empty_series(tmp_path):
    records = [r for r in RESUMED if r["kind"] != "resume"]
    for r in records:
        r.pop("bleu", None)
    curves = run_curves(write_run(tmp_path / "run", records))
    assert curves.resumed_at == [] and curves.resumed_minutes == []
    assert curves.series["bleu"].steps == [] and curves.series["loss"].steps == [2, 4, 6, 8]


def test_legend_names_are_the_directories_unless_two_share_one():
    assert legend_names([Path("runs/base"), Path("runs/big")]) == ["base", "big"]
    assert legend_names([Path("a/tiny"), Path("b/tiny")]) == ["a/tiny", "b/tiny"]


def test_a_real_resumed_run_is_marked_where_it_resumed(tiny_corpus, tmp_path):
    """`nmt train` to update 2, then on to 4: the log marks the resume at 2, and the plot's
    loss series has every update once."""
    import torch

    from nmt.runtime import Runtime
    from nmt.training.trainer import Trainer

    run = tiny_corpus.new_run(tmp_path / "run")
    for updates in (2, 4):
        cfg = tiny_corpus.config(run, f"train.max_updates={updates}")
        Trainer(cfg, Runtime(torch.device("cpu"), "fp32"), log=lambda m: None).fit()
    curves = run_curves(run)
    assert curves.resumed_at == [2]
    assert curves.series["loss"].steps == [1, 2, 3, 4]
    assert curves.series["ppl"].steps == [2, 4]  # each leg ends with a validation


def test_the_command_overlays_two_runs_in_one_file(cli_inline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs" / "base", RESUMED)
    write_run(tmp_path / "runs" / "big", [r for r in RESUMED if r["kind"] != "resume"])
    result = cli_inline("plot", "runs/base", "runs/big", "-o", "both.svg")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "wrote both.svg"
    svg = (tmp_path / "both.svg").read_text(encoding="utf-8")
    # matplotlib draws text as paths, each after a comment holding the text.
    assert "<!-- base -->" in svg and "<!-- big -->" in svg  # the legend
    result = cli_inline("plot", "runs/base", "runs/big")  # several runs: ./curves.png
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_one_run_given_twice_is_refused_under_any_name(cli_inline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs" / "base", RESUMED)
    (tmp_path / "alias").symlink_to(tmp_path / "runs" / "base")
    for second in ("runs/base", "runs/../runs/base/", "alias"):
        result = cli_inline("plot", "runs/base", second, "-o", "twice.png")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.splitlines()[-1] == (
            f"error: {Path(second)} is runs/base given again: give each run directory once"
        )
        assert not (tmp_path / "twice.png").exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "no metrics.jsonl in runs/bad: is it a run directory of nmt train?"),
        ("no metrics", "no metrics.jsonl in runs/bad: is it a run directory of nmt train?"),
        ("no records", "runs/bad/metrics.jsonl holds no records yet"),
    ],
)
def test_a_bad_run_among_several_is_one_error_line_and_no_file(
    cli_inline, tmp_path, monkeypatch, damage, message
):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs" / "good", RESUMED)
    if damage != "missing":
        (tmp_path / "runs" / "bad").mkdir()
    if damage == "no records":
        (tmp_path / "runs" / "bad" / "metrics.jsonl").write_text('{"kind": "tr\n')
    result = cli_inline("plot", "runs/good", "runs/bad", "-o", "out.png")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"error: {message}"
    assert not (tmp_path / "out.png").exists()


def test_values_beyond_what_matplotlib_can_place_are_gaps(cli_inline, tmp_path, monkeypatch):
    """A diverged run: every loss 1e308, an infinite and a NaN perplexity (before: the
    traceback `ValueError: arange: cannot compute length` from matplotlib's ticks)."""
    monkeypatch.chdir(tmp_path)
    huge = [r | {"loss": 1e308} if r["kind"] == "train" else r for r in RESUMED]
    huge[2] = huge[2] | {"ppl": float("inf")}
    huge[6] = huge[6] | {"ppl": float("nan")}
    write_run(tmp_path / "runs" / "diverged", huge)
    assert run_curves(tmp_path / "runs" / "diverged").series["loss"].values[0] == 1e308
    result = cli_inline("plot", "runs/diverged", "-o", "out.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
