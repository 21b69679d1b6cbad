"""Summaries printed to a file or a pipe are not cut to 80 columns."""

from __future__ import annotations

from pathlib import Path

from nmt.data.prepare import PrepareResult
from nmt.report import print_prepare_summary

LONG_DIRECTORY = Path("/tmp/a/run/directory/with/a/rather/long/name/runs/multi30k_de_en/data")


def test_prepare_table_is_not_wrapped_when_stdout_is_not_a_terminal(capsys):
    """Found broken: rich assumed 80 columns and wrapped the title and every cell."""
    split = {
        "read": 29001,
        "kept": 29000,
        "pairs": 29000,
        "dropped": {"empty": 1, "too_long_and_then_some_more_words": 3},
        "tokens": {"src": 373020, "tgt": 414330},
        "length_percentiles": {"src": {"p50": 11, "p90": 19, "max": 40}},
    }
    stats = {
        "splits": {"train": split, "test_2016_flickr": split},
        "vocab": {"joint": True, "src": 10000, "tgt": 10000},
    }
    print_prepare_summary(PrepareResult(LONG_DIRECTORY, stats, skipped=False))
    lines = capsys.readouterr().out.splitlines()
    assert f"prepared data in {LONG_DIRECTORY}" in lines[0]
    rows = [line for line in lines if "test_2016_flickr" in line]
    assert len(rows) == 1 and "29000/29001" in rows[0] and "373020/414330" in rows[0], lines
    assert max(map(len, lines)) > 80
    assert "too_long_and_then_some_more_words 3" in "\n".join(lines)
