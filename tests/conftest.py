"""Shared fixtures: the real corpora in ../shared/data, sliced small for speed."""

from __future__ import annotations

import os
import subprocess
import traceback
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NMT_SHARED_DATA", REPO.parent / "shared" / "data"))
MULTI30K = SHARED_DATA / "multi30k"


def head(path: Path, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not MULTI30K.is_dir():
        pytest.fail(f"the shared corpora are missing: expected {SHARED_DATA} (set NMT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def small_mirror(tmp_path: Path, shared_data: Path) -> Path:
    """A mirror directory with the first lines of Multi30k de/en (train 400, val/test 40)."""
    root = tmp_path / "mirror"
    (root / "multi30k").mkdir(parents=True)
    sizes = {"train": 400, "val": 40, "test_2016_flickr": 40}
    for split, n in sizes.items():
        for lang in ("de", "en"):
            lines = head(shared_data / "multi30k" / f"{split}.{lang}", n)
            (root / "multi30k" / f"{split}.{lang}").write_text(
                "\n".join(lines) + "\n", encoding="utf-8"
            )
    return root


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch) -> Path:
    """Run the test from an empty working directory (relative data/ and runs/ land there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NMT_DATA_MIRROR", raising=False)
    return tmp_path


@pytest.fixture
def one_thread():
    """One intra-op thread for in-process model runs (what train.threads=1 sets in the CLI):
    deterministic, and far faster than two threads when other jobs share the CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cli_inline():
    """`cli_inline(*args)`: `nmt *args` run in this process (typer's CliRunner, no 3 s of
    interpreter and torch start-up), returned as a CompletedProcess; an exception that escaped
    the CLI is appended to stderr as the traceback a real process would print."""
    from typer.testing import CliRunner

    from nmt.cli import app

    def run(*args) -> subprocess.CompletedProcess:
        result = CliRunner().invoke(app, [str(a) for a in args])
        stderr = result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            stderr += "".join(traceback.format_exception(result.exception))
        return subprocess.CompletedProcess(args, result.exit_code, result.stdout, stderr)

    return run
