"""A progress bar with ETA for interactive training (rich); plain log lines otherwise."""

from __future__ import annotations

import math
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def expected_updates(
    *, step: int, max_updates: int, elapsed: float, max_seconds: float, rate: float
) -> int:
    """The update training will stop at: max_updates, or sooner where the time limit comes
    first. `elapsed` seconds of `max_seconds` (0: no limit) are spent, at `rate` updates per
    second: step + (max_seconds - elapsed) * rate updates, if fewer than max_updates."""
    if not max_seconds or rate <= 0 or not math.isfinite(rate):
        return max_updates
    by_time = step + max(max_seconds - elapsed, 0.0) * rate
    return max(step, min(max_updates, math.ceil(by_time)))


class ProgressBar:
    """Shows updates done / the update training will stop at, with ETA, on a terminal;
    silent when not a TTY or not the main process. Messages printed through it appear above
    the bar.

    The total is max_updates, or, when train.max_minutes (`max_seconds`) comes first, the
    updates that fit in the time left at the speed measured so far, so the bar fills and
    the ETA counts down to whichever limit stops the run. `elapsed`: the seconds a resumed
    run has already trained (they count towards max_minutes).
    """

    def __init__(
        self,
        *,
        total: int,
        done: int,
        enabled: bool,
        max_seconds: float = 0.0,
        elapsed: float = 0.0,
    ):
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Progress | None = None
        self._task = None
        self.total, self.done = total, done
        self.max_seconds, self.elapsed_before = max_seconds, elapsed
        self._started = time.monotonic()

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=self.total, completed=self.done, info=""
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def advance(self, step: int, info: str = "") -> None:
        if self._progress is not None:
            total = self.expected_total(step, time.monotonic() - self._started)
            self._progress.update(self._task, completed=step, total=total, info=info)

    def expected_total(self, step: int, seconds: float) -> int:
        """The total to show at `step`, `seconds` after this run (or resumed run) started."""
        rate = (step - self.done) / seconds if seconds > 0 else 0.0
        return expected_updates(
            step=step,
            max_updates=self.total,
            elapsed=self.elapsed_before + seconds,
            max_seconds=self.max_seconds,
            rate=rate,
        )

    def print(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stderr, flush=True)
