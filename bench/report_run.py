"""Summarise a finished run directory as Markdown: validation curve, throughput, test scores.

    python bench/report_run.py runs/multi30k_de_en

Reads `metrics.jsonl` and `eval/results.json` (written by `nmt run` / `nmt train`) and prints
the tables that docs/benchmarks.md quotes, so every figure there comes from this command.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from nmt.training.metrics import read_metrics


def validation_table(records: list[dict]) -> list[str]:
    rows = [
        "| update | training minutes | dev loss | dev ppl | dev BLEU (greedy) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        if r.get("kind") != "valid":
            continue
        bleu = f"{r['bleu']:.2f}" if "bleu" in r else "-"
        rows.append(
            f"| {r['step']} | {r.get('elapsed_s', 0) / 60:.1f} | {r['loss']:.3f} "
            f"| {r['ppl']:.2f} | {bleu} |"
        )
    return rows


def throughput_lines(records: list[dict]) -> list[str]:
    train = [r for r in records if r.get("kind") == "train"]
    if not train:
        return []
    tgt = [r["tgt_tokens_per_s"] for r in train]
    both = [r["tokens_per_s"] for r in train]
    pad = [r["padding"] for r in train]
    last = train[-1]
    return [
        f"- updates: {last['step']}, epochs started: {last['epoch'] + 1}, "
        f"training loop wall time: {last['elapsed_s'] / 60:.1f} min",
        f"- target tokens/s: median {statistics.median(tgt):.0f} "
        f"(min {min(tgt):.0f}, max {max(tgt):.0f}); source+target tokens/s: median "
        f"{statistics.median(both):.0f}",
        f"- padding fraction: median {statistics.median(pad):.1%}; "
        f"peak memory {max(r['memory_mb'] for r in train):.0f} MB",
    ]


def test_table(results: dict) -> list[str]:
    rows = [
        "| split | checkpoint | beam | BLEU (cased) | BLEU (lowercased) | chrF | chrF (lc) "
        "| TER | sent/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["results"]:
        c, lc = r["cased"], r["lowercased"]
        # {"path", "step", "sha256"}: a name like best.pt moves on. Files written before
        # results carried their checkpoint's identity name it once, at the top.
        ckpt = r.get("checkpoint") or {"path": results["checkpoint"], "step": "?", "sha256": ""}
        where = f"`{Path(ckpt['path']).name}` step {ckpt['step']} {ckpt['sha256'][:8]}".rstrip()
        beam = r.get("beam_size", results.get("beam_size"))
        rows.append(
            f"| {r['split']} | {where} | {beam} "
            f"| {c['bleu']['score']:.2f} | {lc['bleu']['score']:.2f} "
            f"| {c['chrf']['score']:.2f} | {lc['chrf']['score']:.2f} "
            f"| {c['ter']['score']:.2f} | {r['sentences_per_s']:.1f} |"
        )
    first = results["results"][0]["cased"] if results["results"] else None
    if first:
        rows += [
            "",
            f"BLEU signature: `{first['bleu']['signature']}`",
            f"chrF signature: `{first['chrf']['signature']}`",
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    records = read_metrics(args.run_dir / "metrics.jsonl")
    lines = [
        "### Validation",
        "",
        *validation_table(records),
        "",
        "### Training",
        "",
        *throughput_lines(records),
    ]
    results_path = args.run_dir / "eval" / "results.json"
    if results_path.exists():
        lines += ["", "### Test sets", "", *test_table(json.loads(results_path.read_text()))]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
