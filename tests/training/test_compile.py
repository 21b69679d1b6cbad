"""train.compile=true on the CPU: torch.compile's code path (the one GPU runs use) trains the
tiny model, saves the plain module, and computes what eager training computes."""

from __future__ import annotations

import pytest
import torch

from nmt.runtime import Runtime
from nmt.training.trainer import Trainer

CPU = Runtime(torch.device("cpu"), "fp32")
UPDATES = ("model.dropout=0", "train.max_updates=1")


def trained(tiny_corpus, run_dir, *extra) -> dict[str, torch.Tensor]:
    cfg = tiny_corpus.config(tiny_corpus.new_run(run_dir), *UPDATES, *extra)
    trainer = Trainer(cfg, CPU, log=lambda message: None)
    trainer.fit()
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.slow
def test_compiled_training_on_the_cpu_matches_eager(tiny_corpus, tmp_path):
    from nmt.checkpoint import load_checkpoint

    eager = trained(tiny_corpus, tmp_path / "eager")
    compiled = trained(tiny_corpus, tmp_path / "compiled", "train.compile=true")
    assert compiled.keys() == eager.keys()
    for name, value in compiled.items():  # fused kernels round differently: close, not equal
        torch.testing.assert_close(value, eager[name], rtol=1e-4, atol=1e-5, msg=name)
    saved = load_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.pt")
    assert not any("_orig_mod" in key for key in saved["model"])  # the plain module's names
    assert saved["train_state"]["step"] == 1
