"""Human-readable summaries that the CLI prints after a stage (rich tables on stderr/stdout)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from nmt.data.prepare import PrepareResult

# Wide enough for any table: a file or a pipe has no width to fit (rich would assume 80
# columns and wrap every cell), and each line of the table must stay one line for grep.
UNBOUNDED_WIDTH = 100_000


def stdout_console() -> Console:
    """rich's console on stdout: a terminal's own width, else no limit at all."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=UNBOUNDED_WIDTH, soft_wrap=True)


def print_prepare_summary(result: PrepareResult) -> None:
    console = stdout_console()
    stats = result.stats
    if result.skipped:
        console.print(f"prepare: inputs unchanged, nothing to do ({result.directory})")
    table = Table(title=f"prepared data in {result.directory}")
    for column in ("split", "pairs kept/read", "dropped", "tokens src/tgt", "src len p50/p90/max"):
        table.add_column(column, justify="left" if column in ("split", "dropped") else "right")
    rows = list(stats["splits"].items())
    # data.corpora: each training corpus's own counts, below the training split's sums
    rows[1:1] = [
        (f"  {name} (weight {s['weight']:g})", s) for name, s in stats.get("corpora", {}).items()
    ]
    for split, s in rows:
        dropped = dict(s.get("dropped", {}))
        if s.get("dropped_too_many_tokens"):
            dropped["too_many_tokens"] = s["dropped_too_many_tokens"]
        if s.get("truncated"):
            dropped["truncated (kept)"] = s["truncated"]
        pct = s.get("length_percentiles", {}).get("src", {})
        lengths = "/".join(f"{pct[k]:g}" for k in ("p50", "p90", "max")) if pct else "-"
        tokens = s.get("tokens", {})
        table.add_row(
            split,
            f"{s.get('pairs', s['kept'])}/{s['read']}",
            "\n".join(f"{k} {v}" for k, v in dropped.items()) or "0",
            f"{tokens.get('src', '-')}/{tokens.get('tgt', '-')}",
            lengths,
        )
    console.print(table)
    vocab = stats["vocab"]
    kind = "joint" if vocab["joint"] else "separate"
    reused = f" (SentencePiece from {stats['tokenizer_from']})" if "tokenizer_from" in stats else ""
    console.print(f"vocabulary: {kind}, source {vocab['src']}, target {vocab['tgt']}{reused}")
