"""A real `nmt serve` process on a free loopback port (--port 0: the kernel picks one, and the
server prints it), stopped with SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 120  # seconds: torch import + model load + warm-up on a busy 2-core CPU


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
