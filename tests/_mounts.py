"""Real full disks and read-only directories for tests, without root and without patching.

`run_in_mounts` runs a command in a private user and mount namespace (`unshare -rm`, as
rootless containers do) where a directory is either a small tmpfs (writes past its size get
ENOSPC from the kernel) or a read-only bind mount of itself (EROFS). The mounts vanish with
the command; nothing on the host changes. Tests skip where user namespaces are disabled.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

TMPFS = 'mount -t tmpfs -o size="$1" tmpfs "$0"'
READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"'


@functools.cache
def mounts_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        probe = ["unshare", "-rm", "sh", "-c", TMPFS, d, "16k"]
        return subprocess.run(probe, capture_output=True).returncode == 0


def run_in_mounts(
    argv: list[str],
    *,
    tmpfs: Path | None = None,
    size: str = "64k",
    read_only: Path | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run `argv` with `tmpfs` a tmpfs of `size` bytes, or `read_only` mounted read-only
    (one of them). Returns the completed process (text output)."""
    if not mounts_work():
        pytest.skip("user namespaces (unshare -rm) are not available here")
    assert (tmpfs is None) != (read_only is None)
    setup, directory = (TMPFS, tmpfs) if tmpfs is not None else (READ_ONLY, read_only)
    script = f'{setup} && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, str(directory), size, *map(str, argv)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=timeout,
    )
