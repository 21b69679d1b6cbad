"""`nmt plot`: training curves from metrics.jsonl as one PNG, PDF or SVG (matplotlib, no
display)."""

from __future__ import annotations

from pathlib import Path

from nmt.errors import DataError
from nmt.files import atomic_write
from nmt.training.metrics import read_metrics

# The output's suffix chooses the format; anything else is refused (a PNG written as
# curves.pdf was the old behaviour, and opens as a broken PDF).
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


def plot_run(run_dir: Path, output: Path) -> Path:
    """Loss, validation perplexity and BLEU against updates (top) and wall time (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image_format = FORMATS.get(Path(output).suffix.lower())
    if image_format is None:
        raise DataError(
            f"--output {output}: the name must end in {', '.join(FORMATS)} (the image format)"
        )
    metrics_path = Path(run_dir) / "metrics.jsonl"
    if not metrics_path.exists():
        raise DataError(f"no metrics.jsonl in {run_dir}: is it a run directory of nmt train?")
    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    if not train and not valid:
        raise DataError(f"{metrics_path} holds no records yet")
    elapsed = _elapsed_by_step(train)
    panels = [
        ("training loss", train, "loss"),
        ("validation perplexity", valid, "ppl"),
        ("validation BLEU", valid, "bleu"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7), squeeze=False)
    for col, (title, rows, key) in enumerate(panels):
        rows = [r for r in rows if key in r]
        steps = [r["step"] for r in rows]
        values = [r[key] for r in rows]
        minutes = [elapsed.get(s, r.get("elapsed_s", 0)) / 60 for s, r in zip(steps, rows)]
        for row, (xs, xlabel) in enumerate(((steps, "updates"), (minutes, "training minutes"))):
            ax = axes[row][col]
            ax.plot(xs, values, marker="o" if key != "loss" else None, markersize=3)
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
            if key == "ppl" and values and max(values) / max(min(values), 1e-9) > 20:
                ax.set_yscale("log")
    fig.suptitle(Path(run_dir).name)
    fig.tight_layout()
    try:
        with atomic_write(output, "wb") as f:
            fig.savefig(f, dpi=100, format=image_format)
    finally:
        plt.close(fig)
    return Path(output)


def _elapsed_by_step(train: list[dict]) -> dict[int, float]:
    """Training seconds at each logged step (validation records take the nearest before)."""
    table: dict[int, float] = {}
    last = 0.0
    for r in sorted(train, key=lambda r: r["step"]):
        last = r.get("elapsed_s", last)
        table[r["step"]] = last
    return table
