"""`nmt plot`: training curves of one or several runs from their metrics.jsonl, overlaid in
one PNG, PDF or SVG (matplotlib, no display), with the updates where a run was resumed
marked.

The figure's data (`run_curves`: one series per run and panel, and its resume marks) is
computed apart from the drawing, so what a plot shows can be checked without pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nmt.errors import DataError
from nmt.files import atomic_write, file_key
from nmt.training.metrics import read_metrics

# The output's suffix chooses the format; anything else is refused (a PNG named .pdf is broken).
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}

# (title, record kind, key): the three panels, left to right.
PANELS = (
    ("training loss", "train", "loss"),
    ("validation perplexity", "valid", "ppl"),
    ("validation BLEU", "valid", "bleu"),
)


@dataclass(frozen=True)
class Series:
    """One run's curve in one panel: values against updates and against training minutes."""

    run: str  # the legend: the run directory's name
    steps: list[int]
    minutes: list[float]
    values: list[float]


@dataclass(frozen=True)
class RunCurves:
    """What one run contributes to the figure."""

    name: str
    series: dict[str, Series]  # panel key ("loss", "ppl", "bleu") -> its curve
    resumed_at: list[int]  # updates a session resumed from (`nmt train` records them)
    resumed_minutes: list[float]  # the same resumes in training minutes


def run_curves(run_dir: Path, *, name: str | None = None) -> RunCurves:
    """The curves and resume marks of one run directory; a directory without a readable
    metrics.jsonl, or whose log holds no records, is one DataError naming it."""
    metrics_path = Path(run_dir) / "metrics.jsonl"
    if not metrics_path.is_file():
        raise DataError(f"no metrics.jsonl in {run_dir}: is it a run directory of nmt train?")
    records = read_metrics(metrics_path)
    by_kind = {kind: [r for r in records if r["kind"] == kind] for kind in ("train", "valid")}
    if not by_kind["train"] and not by_kind["valid"]:
        raise DataError(f"{metrics_path} holds no records yet")
    name = name or Path(run_dir).name
    elapsed = _elapsed_by_step(by_kind["train"])
    series = {}
    for _, kind, key in PANELS:
        rows = [r for r in by_kind[kind] if key in r]
        steps = [r["step"] for r in rows]
        minutes = [elapsed.get(r["step"], r.get("elapsed_s", 0)) / 60 for r in rows]
        series[key] = Series(name, steps, minutes, [r[key] for r in rows])
    resumes = [r for r in records if r["kind"] == "resume"]
    return RunCurves(
        name,
        series,
        resumed_at=[r["step"] for r in resumes],
        resumed_minutes=[r.get("elapsed_s", 0) / 60 for r in resumes],
    )


def plot_runs(run_dirs: Sequence[Path], output: Path) -> Path:
    """Loss, validation perplexity and BLEU of every run against updates (top) and wall
    time (bottom), one colour per run (legend: its name), a dotted line where it resumed."""
    image_format = FORMATS.get(Path(output).suffix.lower())
    if image_format is None:
        raise DataError(
            f"--output {output}: the name must end in {', '.join(FORMATS)} (the image format)"
        )
    refuse_repeated_runs(run_dirs)
    runs = [run_curves(d, name=n) for d, n in zip(run_dirs, legend_names(run_dirs))]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 7), squeeze=False)
    try:
        for col, (title, _, key) in enumerate(PANELS):
            for row, xlabel in enumerate(("updates", "training minutes")):
                _draw_panel(axes[row][col], runs, key, by_minutes=row == 1)
                axes[row][col].set_title(title)
                axes[row][col].set_xlabel(xlabel)
        fig.suptitle(" vs ".join(run.name for run in runs))
        fig.tight_layout()
        with atomic_write(output, "wb") as f:
            fig.savefig(f, dpi=100, format=image_format)
    finally:
        plt.close(fig)
    return Path(output)


def refuse_repeated_runs(run_dirs: Sequence[Path]) -> None:
    """One run given twice (perhaps under two names) would be drawn twice over itself, with
    two legend entries for one run."""
    seen: dict[tuple[int, int], Path] = {}
    for run_dir in run_dirs:
        key = file_key(run_dir)  # None: run_curves names a missing run directory
        if key in seen:
            raise DataError(f"{run_dir} is {seen[key]} given again: give each run directory once")
        if key is not None:
            seen[key] = Path(run_dir)


def _draw_panel(ax, runs: list[RunCurves], key: str, *, by_minutes: bool) -> None:
    """Every run's `key` curve in one axes, its resumes as dotted lines of its colour."""
    values = []
    for run in runs:
        series = run.series[key]
        xs = series.minutes if by_minutes else series.steps
        (line,) = ax.plot(
            xs, drawable(series.values), marker=None if key == "loss" else "o", markersize=3,
            label=run.name,
        )  # fmt: skip
        for x in run.resumed_minutes if by_minutes else run.resumed_at:
            ax.axvline(x, color=line.get_color(), linestyle=":", linewidth=1)
        values += series.values
    ax.grid(alpha=0.3)
    if key == "ppl" and values and max(values) / max(min(values), 1e-9) > 20:
        ax.set_yscale("log")
    if len(runs) > 1:
        ax.legend(fontsize="small")


# matplotlib's axis limits and ticks overflow near float's end (a loss of 1e308 throughout:
# "arange: cannot compute length"); a diverged run's values beyond this are not drawn.
_LARGEST_DRAWN = 1e300


def drawable(values: list[float]) -> list[float]:
    """The values with those matplotlib cannot place (inf, NaN, beyond 1e300) as NaN, a gap."""
    return [v if math.isfinite(v) and abs(v) <= _LARGEST_DRAWN else math.nan for v in values]


def legend_names(run_dirs: Sequence[Path]) -> list[str]:
    """Each run's directory name; where two runs share one (runs/a/tiny, runs/b/tiny), the
    paths as given, so no two curves have the same label."""
    names = [Path(d).name or str(d) for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def _elapsed_by_step(train: list[dict]) -> dict[int, float]:
    """Training seconds at each logged step (validation records take the nearest before)."""
    table: dict[int, float] = {}
    last = 0.0
    for r in sorted(train, key=lambda r: r["step"]):
        last = r.get("elapsed_s", last)
        table[r["step"]] = last
    return table
