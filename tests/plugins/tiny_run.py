"""One tiny trained model per test session, and helpers to drive the `nmt` command line.

The model is trained in-process (seconds) from the first lines of the real Multi30k de-en
files, laid out the way a user's working directory looks after `nmt download` and
`nmt train`: `data/multi30k/...` and `runs/tiny/{checkpoints,metrics.jsonl,...}`, with the
relative paths of configs/tiny.yaml, so CLI tests run with that directory as cwd.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SIZES = {"train": 400, "val": 40, "test_2016_flickr": 40}
# configs/tiny.yaml, smaller still: 100 updates of 512 tokens on one core; step checkpoints
# at 50 and 100.
OVERRIDES = [
    "data.test_splits=[test_2016_flickr]",
    "train.device=cpu",
    "train.threads=1",
    "train.max_tokens=512",
    "train.max_updates=100",
    "train.warmup_updates=30",
    "train.lr=3e-3",
    "train.log_every=10",
    "train.valid_every=50",
    "train.save_every=50",
    "train.valid_bleu_max_sentences=10",
]


@dataclass(frozen=True)
class TinyRun:
    root: Path  # the working directory: data/ and runs/ are in it
    run_dir: Path  # root / runs / tiny

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    @property
    def step_checkpoints(self) -> list[Path]:
        found = self.run_dir.joinpath("checkpoints").glob("step_*.pt")
        return sorted(found, key=lambda p: int(p.stem.split("_")[1]))

    def raw(self, split: str, lang: str) -> Path:
        return self.root / "data" / "multi30k" / f"{split}.{lang}"


def _write_mirror(corpus_slice: Path, root: Path) -> Path:
    (root / "multi30k").mkdir(parents=True)
    for split, n in SIZES.items():
        for lang in ("de", "en"):
            with open(corpus_slice / "multi30k" / f"{split}.{lang}", encoding="utf-8") as f:
                lines = [next(f) for _ in range(n)]
            (root / "multi30k" / f"{split}.{lang}").write_text("".join(lines), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, corpus_slice: Path) -> TinyRun:
    """download (from a small mirror) -> prepare -> train 100 updates, in a temporary cwd."""
    import torch

    from nmt.config import load_config
    from nmt.data.prepare import prepare
    from nmt.pipeline.run import ensure_downloaded
    from nmt.runtime import Runtime
    from nmt.training.trainer import Trainer

    root = tmp_path_factory.mktemp("tiny_run", numbered=False)
    cfg = load_config(REPO / "configs" / "tiny.yaml", OVERRIDES)
    mirror = _write_mirror(corpus_slice, tmp_path_factory.mktemp("mirror"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("NMT_DATA_MIRROR", str(mirror))
        ensure_downloaded(cfg)
        prepare(cfg)
        Trainer(cfg, Runtime(torch.device("cpu"), "fp32"), log=lambda message: None).fit()
    return TinyRun(root=root, run_dir=root / cfg.run_path)


Nmt = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def nmt_cli() -> Nmt:
    """`nmt_cli(*args, cwd=..., input=...)` runs `python -m nmt.cli` as a user would."""

    def run(*args, cwd: Path, input: str | bytes | None = None, env: dict | None = None):
        environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        environment.pop("NMT_DATA_MIRROR", None)
        return subprocess.run(
            [sys.executable, "-m", "nmt.cli", *map(str, args)],
            cwd=cwd,
            input=input,
            capture_output=True,
            text=not isinstance(input, bytes),
            env=environment,
            timeout=300,
        )

    return run


@pytest.fixture
def nmt_inline(monkeypatch, cli_inline) -> Nmt:
    """The same command line run in this process (no 3 s of interpreter and torch start-up).

    Returns a CompletedProcess like `nmt_cli`; an exception that escaped the CLI is appended
    to stderr as the traceback a real process would print.
    """

    def run(*args, cwd: Path) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        return cli_inline(*args)

    return run


@pytest.fixture(scope="session")
def assert_clean_failure() -> Callable[..., None]:
    """Non-zero exit, one `error: ...` message naming what is wrong, no traceback."""

    def check(result: subprocess.CompletedProcess, *fragments: str) -> None:
        assert result.returncode != 0, result
        assert "Traceback" not in result.stderr + result.stdout, result.stderr
        assert result.stderr.startswith("error: "), result.stderr
        for fragment in fragments:
            assert fragment in result.stderr, result.stderr

    return check
