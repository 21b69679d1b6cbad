"""The training progress bar ends where training will: at max_updates, or sooner when
train.max_minutes is the tighter limit."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from nmt.training import progress
from nmt.training.progress import ProgressBar, expected_updates


@pytest.mark.parametrize(
    "step, max_updates, elapsed, max_seconds, rate, expected",
    [
        (100, 10_000, 60.0, 0.0, 2.0, 10_000),  # no time limit
        (100, 10_000, 60.0, 600.0, 2.0, 1_180),  # 540 s left at 2 updates/s
        (100, 1_000, 60.0, 600.0, 2.0, 1_000),  # max_updates comes first
        (100, 10_000, 700.0, 600.0, 2.0, 100),  # time is up: it stops now
        (0, 10_000, 0.0, 600.0, 0.0, 10_000),  # no speed measured yet
    ],
)
def test_expected_updates(step, max_updates, elapsed, max_seconds, rate, expected):
    assert (
        expected_updates(
            step=step, max_updates=max_updates, elapsed=elapsed, max_seconds=max_seconds, rate=rate
        )
        == expected
    )


def test_the_bar_total_and_eta_follow_max_minutes(monkeypatch):
    """Found broken: with max_updates 100000 and max_minutes 10 the bar showed 1/100000 and
    an ETA of days while the run would stop after 10 minutes."""
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(
        progress, "Console", lambda **kw: Console(file=io.StringIO(), force_terminal=True)
    )
    # resumed at update 50 after 100 s of a 10-minute budget
    bar = ProgressBar(total=100_000, done=50, enabled=True, max_seconds=600.0, elapsed=100.0)
    with bar:
        clock[0] += 50.0  # 100 updates in 50 s: 2 updates/s, 450 s left
        bar.advance(150)
        task = bar._progress.tasks[0]
        assert (task.completed, task.total) == (150, 150 + 900)
    plain = ProgressBar(total=100_000, done=0, enabled=True)
    with plain:
        clock[0] += 50.0
        plain.advance(100)
        assert plain._progress.tasks[0].total == 100_000
