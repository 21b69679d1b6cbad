"""What the command-line failure tests share: the real entry point in a subprocess, and the
check that a failure is clean (exit 2, one `error:` message, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_process(
    *args, cwd: Path, prelude: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """The real entry point, as `python -m nmt.cli` runs it; `prelude` runs first in the same
    process (e.g. to report its peak memory at exit); `env` adds environment variables."""
    code = f"{prelude}\nfrom nmt.cli import main\nmain()"
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    env.pop("NMT_DATA_MIRROR", None)
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, no traceback, one `error: ...` message holding every fragment."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("error: ") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
