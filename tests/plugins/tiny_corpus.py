"""One tiny prepared corpus per test session, fresh run directories started from it, and a
run trained on it for 3 updates.

The corpus (the first 64 Multi30k de-en training pairs, 40 dev pairs, a 400-piece joint
vocabulary) is downloaded from a mirror and prepared once per session; each training run
copies the prepared `data/` into its own run directory, so runs never share checkpoints.
With `train.max_tokens=512` one epoch is 7 batches.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from nmt.checkpoint import load_run_config
from nmt.config import ExperimentConfig
from nmt.data.batching import make_batches
from nmt.data.download import download
from nmt.data.prepare import load_prepared, prepare, prepared_dir

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "tiny.yaml"
SIZES = {"train": 64, "val": 40}

# Everything that makes the runs small, CPU-only and single-threaded (hence deterministic).
BASE_OVERRIDES = (
    "model.preset=tiny",
    "data.vocab_size=400",
    "data.test_splits=[]",
    "train.device=cpu",
    "train.precision=fp32",
    "train.threads=1",
    "train.max_tokens=512",
    "train.valid_bleu=false",
    "train.log_every=1",
    "train.valid_every=1000",
    "train.save_every=1000",
)


@dataclass(frozen=True)
class TinyCorpus:
    """A prepared corpus plus helpers to start runs from it."""

    data_dir: Path  # the downloaded corpus (data.data_dir)
    prepared: Path  # <base run>/data, copied into every new run directory

    def overrides(self, run_dir: Path, *extra: str) -> list[str]:
        return [
            f"run_dir={run_dir}",
            f"data.data_dir={self.data_dir}",
            *BASE_OVERRIDES,
            *extra,
        ]

    def config(self, run_dir: Path, *extra: str) -> ExperimentConfig:
        return load_run_config(TINY_CONFIG, self.overrides(run_dir, *extra))

    def cli_args(self, run_dir: Path, *extra: str) -> list[str]:
        """`CONFIG OVERRIDES...` for `nmt train`."""
        return [str(TINY_CONFIG), *self.overrides(run_dir, *extra)]

    def new_run(self, run_dir: Path) -> Path:
        """A fresh run directory holding only the prepared data."""
        shutil.copytree(self.prepared, run_dir / "data")
        return run_dir

    def num_batches(self, max_tokens: int = 512) -> int:
        src, tgt = load_prepared(self.config(self.prepared.parent), "train")
        return len(make_batches(src.lengths, tgt.lengths, max_tokens=max_tokens))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, corpus_slice: Path) -> TinyCorpus:
    root = tmp_path_factory.mktemp("tiny_corpus")
    mirror = root / "mirror" / "multi30k"
    mirror.mkdir(parents=True)
    for split, n in SIZES.items():
        for lang in ("de", "en"):
            with open(corpus_slice / "multi30k" / f"{split}.{lang}", encoding="utf-8") as f:
                lines = [next(f) for _ in range(n)]
            (mirror / f"{split}.{lang}").write_text("".join(lines), encoding="utf-8")
    data_dir = root / "data"
    download(
        "multi30k",
        languages=["de", "en"],
        splits=list(SIZES),
        data_dir=data_dir,
        mirror=mirror.parent,
    )
    corpus = TinyCorpus(data_dir=data_dir, prepared=root / "base" / "data")
    cfg = corpus.config(root / "base")
    prepare(cfg)
    assert prepared_dir(cfg) == corpus.prepared
    return corpus


@pytest.fixture(scope="session")
def trained_run(tiny_corpus: TinyCorpus, tmp_path_factory) -> Path:
    """A real run directory after 3 updates of the tiny model, with a checkpoint after each
    (step_1.pt .. step_3.pt, last.pt): the valid checkpoints the schema tests mutate. Tests
    copy what they change."""
    import torch

    from nmt.runtime import Runtime
    from nmt.training.trainer import Trainer

    run = tiny_corpus.new_run(tmp_path_factory.mktemp("trained") / "run")
    cfg = tiny_corpus.config(run, "train.max_updates=3", "train.save_every=1", "train.keep_last=5")
    Trainer(cfg, Runtime(torch.device("cpu"), "fp32"), log=lambda message: None).fit()
    return run
