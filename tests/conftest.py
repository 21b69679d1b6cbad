"""Shared fixtures: real Multi30k text, from the slice committed under tests/fixtures (fast
tests: a plain clone runs them) or the full corpora in ../shared/data (tests that need them
are skipped, with the reason, where they are absent; CI always has them); one intra-op thread
for the whole session. The fixtures of tests/plugins (a tiny corpus and a tiny trained model)
are registered here for every directory.
"""

from __future__ import annotations

import os
import subprocess
import traceback
from pathlib import Path

import pytest

pytest_plugins = ["plugins.tiny_corpus", "plugins.tiny_run"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NMT_SHARED_DATA", REPO.parent / "shared" / "data"))
MULTI30K = SHARED_DATA / "multi30k"
# The first 2000 train and 100 val/test lines of Multi30k de/en (tests/fixtures/multi30k/README.md),
# laid out as a data root: CORPUS_SLICE / "multi30k" / "train.de".
CORPUS_SLICE = REPO / "tests" / "fixtures"


def head(path: Path, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The full corpora, for the tests that need more than the committed slice."""
    if not MULTI30K.is_dir():
        pytest.skip(
            f"needs the full corpora in {SHARED_DATA} (absent; set NMT_SHARED_DATA to them)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def corpus_slice() -> Path:
    """The committed slice of Multi30k de/en, a prefix of each full file: a test reading its
    first lines (up to 2000 of train, 100 of val and the test sets) gets what the full
    corpus would give."""
    return CORPUS_SLICE


@pytest.fixture
def small_mirror(tmp_path: Path, corpus_slice: Path) -> Path:
    """A mirror directory with the first lines of Multi30k de/en (train 400, val/test 40)."""
    root = tmp_path / "mirror"
    (root / "multi30k").mkdir(parents=True)
    sizes = {"train": 400, "val": 40, "test_2016_flickr": 40}
    for split, n in sizes.items():
        for lang in ("de", "en"):
            lines = head(corpus_slice / "multi30k" / f"{split}.{lang}", n)
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


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread for every in-process model run of the session, fixtures included
    (what train.threads=1 sets in the CLI): deterministic, and far faster than two threads
    when other jobs share the CPU."""
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
