"""bench/train_speed.py times the trainer's own update (nmt.training.step), not a copy."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import models  # noqa: E402
import train_speed  # noqa: E402

from nmt.data.batching import Batch  # noqa: E402
from nmt.training import step  # noqa: E402


def test_the_benchmark_update_is_the_trainers_step(monkeypatch):
    model = models.build_nmt("small", vocab_size=40, seed=1, d_model=16, ffn_dim=32)
    ids = torch.tensor([[5, 6, 7, 3], [8, 9, 3, 0]])
    batch = Batch(ids, ids, ids, np.arange(2), num_src_tokens=7, num_tgt_tokens=7)
    trainer = train_speed.NmtTrainer(
        model, [batch], device=torch.device("cpu"), lr=1e-3, compile_model=False
    )
    calls = []
    real = step._apply
    monkeypatch.setattr(step, "_apply", lambda *a: calls.append(a) or real(*a))
    before = [p.detach().clone() for p in model.parameters()]
    trainer.update(trainer.batches[0])
    assert len(calls) == 1  # through nmt.training.step, as the Trainer's update
    assert trainer.parts.scheduler.last_epoch == 1  # the scheduler stepped, as in training
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
