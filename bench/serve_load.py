"""`nmt serve` under load: many concurrent clients against a real server process.

1. `nmt translate` of the pool of test sentences (the reference, and the offline rate).
2. `nmt serve CHECKPOINT` on a free loopback port, ready once /health says so.
3. One client, one sentence per request, for --sequential-seconds (no batching possible).
4. --clients concurrent clients for --seconds, each sending 1-3 sentences per request
   (LibreTranslate's POST /translate, q a list) and checking every answer against the
   reference: errors (any non-200), lost answers (exceptions, timeouts) and mismatched
   lines are counted; zero of each is the expectation.
5. SIGTERM; the server must drain and exit 0.

Prints a table last and writes bench/results/serve_load.json. The clients run on the same
CPU as the server: on a 2-core machine they take a share of it.

    python bench/serve_load.py /work/model/runs/multi30k_de_en/checkpoints/best.pt
    python bench/serve_load.py CHECKPOINT --quick       # 8 clients, 10 s: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from corpus import DATA_ROOT
from record import machine, output_path, table, write

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    args = parse_args()
    pool = read_pool(args.data_root / "multi30k" / f"{args.split}.de", args.lines)
    print(f"reference: nmt translate of {len(pool)} sentences ...", flush=True)
    reference, offline_seconds = translate_offline(args.checkpoint, pool)
    _, startup_seconds = translate_offline(args.checkpoint, pool[:1])  # start-up, load, 1 line
    server, url = start_server(args)
    try:
        print(f"one at a time for {args.sequential_seconds:g} s ...", flush=True)
        sequential = asyncio.run(run_clients(url, pool, reference, 1, args.sequential_seconds, 1))
        print(f"{args.clients} clients for {args.seconds:g} s ...", flush=True)
        loaded = asyncio.run(
            run_clients(url, pool, reference, args.clients, args.seconds, args.max_lines)
        )
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(120)
    record = {
        "machine": machine(),
        "versions": versions(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "offline": {
            "sentences": len(pool),
            "seconds": offline_seconds,
            "sentences_per_s": len(pool) / offline_seconds,
            "startup_seconds": startup_seconds,
            "sentences_per_s_after_startup": (len(pool) - 1) / (offline_seconds - startup_seconds),
            "note": "nmt translate as a process: wall time, start-up and model load included; "
            "after_startup subtracts the wall time of a 1-sentence run",
        },
        "one_at_a_time": sequential,
        "concurrent": loaded,
        "batches": batch_stats(metrics),
        "server_exit_code": exit_code,
    }
    path = write(record, output_path("serve_load", output=args.output, quick=args.quick))
    print_table(record)
    print(f"record: {path}")
    bad = loaded["errors"] + loaded["lost"] + loaded["mismatched"] + sequential["mismatched"]
    sys.exit(0 if bad == 0 and exit_code == 0 else 1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "checkpoint",
        type=Path,
        nargs="?",
        default=Path("/work/model/runs/multi30k_de_en/checkpoints/best.pt"),
    )
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sequential-seconds", type=float, default=20.0)
    parser.add_argument("--max-lines", type=int, default=3, help="sentences per request, 1..N")
    parser.add_argument("--lines", type=int, default=1000, help="size of the sentence pool")
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--max-batch-tokens", type=int, default=2048)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="8 clients for 10 s")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.seconds, args.sequential_seconds = 8, 10.0, 5.0
    return args


def read_pool(path: Path, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for _, line in zip(range(n), f)]
    return list(dict.fromkeys(line for line in lines if line.strip()))  # distinct sentences


def translate_offline(checkpoint: Path, pool: list[str]) -> tuple[dict[str, str], float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "nmt.cli", "translate", str(checkpoint), "--device", "cpu"],
        input="\n".join(pool) + "\n",
        capture_output=True,
        text=True,
        check=True,
        env=environment(),
    )
    seconds = time.perf_counter() - started
    outputs = done.stdout.split("\n")[: len(pool)]
    return dict(zip(pool, outputs)), seconds


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable, "-m", "nmt.cli", "serve", str(args.checkpoint), "--port", "0",
        "--device", "cpu", "--max-batch-tokens", str(args.max_batch_tokens),
        "--max-wait-ms", str(args.max_wait_ms), "--timeout", "300",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=environment()
    )
    url = None
    for line in process.stderr:  # "serving ... on http://127.0.0.1:PORT/", then "ready"
        found = re.search(r"on (http://[0-9.]+:\d+)/", line)
        url = found.group(1) if found else url
        if line.strip() == "ready":
            break
    if url is None or httpx.get(f"{url}/health").status_code != 200:
        raise SystemExit(f"nmt serve did not start (exit {process.poll()})")
    # The per-request log lines must be read, or the pipe fills and the server blocks.
    threading.Thread(target=collections.deque, args=(process.stderr, 0), daemon=True).start()
    return process, url


async def run_clients(
    url: str, pool: list[str], reference: dict[str, str], clients: int, seconds: float,
    max_lines: int,
) -> dict:  # fmt: skip
    """`clients` concurrent loops until `seconds` have passed; each checks its answers."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    stop_at = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        started = time.perf_counter()
        tallies = await asyncio.gather(
            *(client(http, random.Random(i), pool, reference, stop_at, max_lines)
              for i in range(clients))
        )  # fmt: skip
        elapsed = time.perf_counter() - started
    latencies = sorted(x for t in tallies for x in t["latencies"])
    sentences = sum(t["sentences"] for t in tallies)
    return {
        "clients": clients,
        "seconds": elapsed,
        "requests": len(latencies),
        "sentences": sentences,
        "sentences_per_s": sentences / elapsed,
        "errors": sum(t["errors"] for t in tallies),
        "lost": sum(t["lost"] for t in tallies),
        "mismatched": sum(t["mismatched"] for t in tallies),
        "latency_ms": {
            "p50": percentile(latencies, 50) * 1000,
            "p95": percentile(latencies, 95) * 1000,
            "p99": percentile(latencies, 99) * 1000,
            "max": latencies[-1] * 1000 if latencies else None,
            "mean": statistics.fmean(latencies) * 1000 if latencies else None,
        },
    }


async def client(
    http: httpx.AsyncClient,
    rng: random.Random,
    pool: list[str],
    reference: dict[str, str],
    stop_at: float,
    max_lines: int,
) -> dict:
    tally = {"latencies": [], "sentences": 0, "errors": 0, "lost": 0, "mismatched": 0}
    while time.perf_counter() < stop_at:
        lines = rng.sample(pool, rng.randint(1, max_lines))
        started = time.perf_counter()
        try:
            r = await http.post("/translate", json={"q": lines, "source": "de", "target": "en"})
        except httpx.HTTPError:
            tally["lost"] += 1
            continue
        tally["latencies"].append(time.perf_counter() - started)
        if r.status_code != 200:
            tally["errors"] += 1
            continue
        got = r.json().get("translatedText")
        if got != [reference[line] for line in lines]:
            tally["mismatched"] += 1
            continue
        tally["sentences"] += len(lines)
    return tally


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    index = min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))
    return values[index]


def batch_stats(metrics: str) -> dict:
    """Lines per decoded batch, from the server's own /metrics."""
    found = {}
    for name in ("nmt_serve_batch_lines_count", "nmt_serve_batch_lines_sum"):
        match = re.search(rf"^{name} (\S+)$", metrics, re.M)
        found[name] = float(match.group(1)) if match else None
    count, total = found.values()
    return {"batches": count, "lines": total, "mean_lines": total / count if count else None}


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("fastapi", "uvicorn", "starlette", "httpx")}


def print_table(record: dict) -> None:
    one, many, off = record["one_at_a_time"], record["concurrent"], record["offline"]
    rows = [
        ["nmt translate (process)", off["sentences"], off["sentences_per_s"], None, None, None],
        [
            "nmt translate (minus start-up)",
            off["sentences"],
            off["sentences_per_s_after_startup"],
            None,
            None,
            None,
        ],
        [
            "serve, 1 client, 1 sentence/request",
            one["sentences"],
            one["sentences_per_s"],
            one["latency_ms"]["p50"],
            one["latency_ms"]["p95"],
            one["latency_ms"]["p99"],
        ],
        [
            f"serve, {many['clients']} clients",
            many["sentences"],
            many["sentences_per_s"],
            many["latency_ms"]["p50"],
            many["latency_ms"]["p95"],
            many["latency_ms"]["p99"],
        ],
    ]
    print(table(["", "sentences", "sent/s", "p50 ms", "p95 ms", "p99 ms"], rows))
    print(
        f"errors {many['errors']}, lost {many['lost']}, mismatched {many['mismatched']}; "
        f"mean lines per batch {record['batches']['mean_lines']}; "
        f"server exit code {record['server_exit_code']}"
    )


if __name__ == "__main__":
    main()
