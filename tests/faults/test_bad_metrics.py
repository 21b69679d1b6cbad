"""Malformed metrics.jsonl lines: a line cut short by a crash, not JSON, not UTF-8, not an
object, a step that is no integer, a loss that is no number.

Found broken: `nmt plot` gave a traceback (AttributeError, TypeError, KeyError) and resume
crashed rewriting the log. metrics.jsonl is a record of training, not its state (checkpoints
are), so both skip such lines with one warning that counts them and names the first; resume
rewrites the log without them. Refusing would cost the plot of every good record, or the
training a resume continues, for a line that a crash is expected to leave.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _trainkit import nmt, train_args

from nmt.training.metrics import MetricsLog, read_metrics

GOOD = [
    {"kind": "train", "time": 1.0, "step": 1, "loss": 9.1, "ppl": 800.0, "elapsed_s": 1.5},
    {"kind": "train", "time": 2.0, "step": 2, "loss": 8.2, "ppl": 500.0, "elapsed_s": 3.0},
    {"kind": "valid", "time": 2.5, "step": 2, "loss": 8.0, "ppl": 450.0, "bleu": 0.4},
    {"kind": "train", "time": 3.0, "step": 3, "loss": 7.5, "ppl": 300.0, "elapsed_s": 4.5},
]
MALFORMED = [
    b"[1, 2, 3]",  # not an object
    b"42",
    b'{"kind": "train", "step": "3", "loss": 1.0}',  # a step that is text
    b'{"kind": "train", "step": true, "loss": 1.0}',  # a bool is no step
    b'{"kind": "train", "loss": 1.0}',  # no step
    b'{"kind": "train", "step": 2, "loss": "high"}',  # a loss that is text
    b'{"kind": 7, "step": 2}',
    b'{"kind": "train", "st\xff": 1}',  # not UTF-8
    b"not json at all",
]


def write_log(path: Path, cut_last: bool = True) -> Path:
    """GOOD records with MALFORMED lines between them and a last line cut short."""
    lines = [json.dumps(GOOD[0]).encode()]
    for record, junk in zip(GOOD[1:], MALFORMED[: len(GOOD) - 1]):
        lines += [junk, json.dumps(record).encode()]
    lines += MALFORMED[len(GOOD) - 1 :]
    if cut_last:
        lines.append(json.dumps(GOOD[0]).encode()[:20])
    path.write_bytes(b"\n".join(lines) + (b"" if cut_last else b"\n"))
    return path


def test_read_metrics_keeps_the_good_records_and_counts_the_rest(tmp_path, capsys):
    records = read_metrics(write_log(tmp_path / "metrics.jsonl"))
    assert records == GOOD
    assert capsys.readouterr().err == (
        f"warning: {tmp_path / 'metrics.jsonl'}: skipped {len(MALFORMED) + 1} malformed lines "
        "(the first is line 2)\n"
    )


def test_resume_rewrites_the_log_without_malformed_lines(tmp_path, capsys):
    path = write_log(tmp_path / "metrics.jsonl")
    MetricsLog(path).truncate_after(2)
    assert [json.loads(line) for line in path.read_text().splitlines()] == GOOD[:3]
    assert "skipped 10 malformed lines" in capsys.readouterr().err


def test_plot_skips_malformed_lines_with_one_warning(cli_inline, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_log(run / "metrics.jsonl")
    result = cli_inline("plot", run)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("warning: ") == 1 and "skipped 10 malformed lines" in result.stderr
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_only_malformed_lines_says_there_are_no_records(cli_inline, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_bytes(b"\n".join(MALFORMED))
    result = cli_inline("plot", run)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "holds no records yet" in result.stderr
    assert not (run / "curves.png").exists()


@pytest.mark.slow
def test_training_resumes_over_a_damaged_log(tiny_corpus, tmp_path):
    """The real `nmt train`: 4 updates, the log damaged, then resumed to 6 updates."""
    run = tiny_corpus.new_run(tmp_path / "run")
    first = nmt(*train_args(tiny_corpus, run, "train.max_updates=4"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    log = run / "metrics.jsonl"
    good = log.read_bytes()
    log.write_bytes(good + b"[1]\n" + b'{"kind": "train", "step": "x"}\n{"kind": "tr')
    resumed = nmt(*train_args(tiny_corpus, run, "train.max_updates=6"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "skipped 3 malformed lines" in resumed.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
