"""One small model and real `nmt serve` processes on free loopback ports, for the module.

The model is trained in-process for a few updates on the first lines of the real Multi30k
de-en files (seconds): its translations are poor but deterministic, and it ends sentences,
so decoding stays quick. Servers are real processes (`python -m nmt.cli serve`), talked to
over HTTP; each fixture stops its server with SIGTERM and checks that it exited 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SIZES = {"train": 300, "val": 20, "test_2016_flickr": 20}
OVERRIDES = [
    "data.test_splits=[test_2016_flickr]",
    "data.vocab_size=500",
    "train.device=cpu",
    "train.threads=1",
    "train.max_tokens=512",
    "train.max_updates=40",
    "train.warmup_updates=10",
    "train.lr=5e-3",
    "train.log_every=20",
    "train.valid_every=1000",
    "train.save_every=1000",
    "train.valid_bleu_max_sentences=5",
]
STARTUP_TIMEOUT = 120  # seconds: torch import + model load + warm-up on a busy 2-core CPU


@pytest.fixture(scope="session")
def serve_checkpoint(tmp_path_factory, shared_data: Path) -> Path:
    """last.pt of a tiny de->en model trained for 40 updates."""
    import torch

    from nmt.config import load_config
    from nmt.data.prepare import prepare
    from nmt.pipeline import ensure_downloaded
    from nmt.runtime import setup_runtime
    from nmt.training.trainer import Trainer

    root = tmp_path_factory.mktemp("serve_run")
    mirror = tmp_path_factory.mktemp("serve_mirror")
    (mirror / "multi30k").mkdir()
    for split, n in SIZES.items():
        for lang in ("de", "en"):
            with open(shared_data / "multi30k" / f"{split}.{lang}", encoding="utf-8") as f:
                lines = [next(f) for _ in range(n)]
            (mirror / "multi30k" / f"{split}.{lang}").write_text("".join(lines), encoding="utf-8")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("NMT_DATA_MIRROR", str(mirror))
        cfg = load_config(REPO / "configs" / "tiny.yaml", OVERRIDES)
        ensure_downloaded(cfg)
        prepare(cfg)
        runtime = setup_runtime(device="cpu", precision="fp32", threads=1)
        try:
            Trainer(cfg, runtime, log=lambda message: None).fit()
        finally:
            torch.set_num_threads(threads)
    return root / cfg.run_path / "checkpoints" / "last.pt"


@dataclass
class Server:
    process: subprocess.Popen
    url: str  # http://127.0.0.1:PORT
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status (killed after `timeout`: a hang fails the test)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def start_server(checkpoint: Path, log_path: Path, *options: str) -> Server:
    """`nmt serve CHECKPOINT --port 0 ...`, returned once /health says ready."""
    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nmt.cli",
            "serve",
            str(checkpoint),
            "--port",
            "0",
            "--device",
            "cpu",
            *options,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=log_path.parent,
    )
    log.close()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nmt serve exited {process.returncode}:\n{log_path.read_text()}")
        if url is None:
            found = re.search(r"on (http://[0-9.]+:\d+)/", log_path.read_text())
            url = found.group(1) if found else None
        if url is not None:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    return Server(process, url, log_path)
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(
        f"nmt serve was not ready after {STARTUP_TIMEOUT} s:\n{log_path.read_text()}"
    )
