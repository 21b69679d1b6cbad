"""One small model for the server tests.

The model is trained in-process for a few updates on the first lines of the real Multi30k
de-en files (seconds): its translations are poor but deterministic. The servers themselves
are started by the test modules (tests/serve/_server.py).
"""

from __future__ import annotations

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
    "train.max_updates=60",
    "train.warmup_updates=10",
    "train.lr=5e-3",
    "train.log_every=20",
    "train.valid_every=1000",
    "train.save_every=1000",
    "train.valid_bleu_max_sentences=5",
    # Short outputs (a half-trained model rarely ends a sentence): decoding stays quick.
    "decode.max_len_a=0.5",
    "decode.max_len_b=2",
]


@pytest.fixture(scope="session")
def serve_checkpoint(tmp_path_factory, corpus_slice: Path) -> Path:
    """last.pt of a tiny de->en model trained for 60 updates."""
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
            with open(corpus_slice / "multi30k" / f"{split}.{lang}", encoding="utf-8") as f:
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
