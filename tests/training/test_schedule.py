"""Inverse-square-root schedule: hand-computed values, and through AdamW + LambdaLR."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from nmt.checkpoint import load_checkpoint, save_checkpoint
from nmt.config import TrainConfig
from nmt.training.schedule import build_scheduler, inverse_sqrt_multiplier

LR, WARMUP, INIT = 1e-3, 4000, 1e-7


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, INIT),  # warmup starts at warmup_init_lr
        (WARMUP // 2, INIT + (LR - INIT) * 0.5),  # halfway up the linear ramp
        (WARMUP, LR),  # the peak
        (4 * WARMUP, LR * math.sqrt(1 / 4)),  # = LR / 2
        (9 * WARMUP, LR / 3),
    ],
)
def test_values_by_hand(step: int, expected: float):
    schedule = inverse_sqrt_multiplier(lr=LR, warmup_updates=WARMUP, warmup_init_lr=INIT)
    assert schedule.lr_at(step) == pytest.approx(expected, rel=1e-12)
    assert schedule(step) == pytest.approx(expected / LR, rel=1e-12)


def test_no_warmup_decays_from_the_first_update():
    schedule = inverse_sqrt_multiplier(lr=LR, warmup_updates=0, warmup_init_lr=INIT)
    assert [schedule.lr_at(s) for s in (0, 1, 4, 100)] == pytest.approx([LR, LR, LR / 2, LR / 10])


def test_continuous_at_the_end_of_warmup():
    schedule = inverse_sqrt_multiplier(lr=LR, warmup_updates=WARMUP, warmup_init_lr=INIT)
    assert schedule.lr_at(WARMUP - 1) < schedule.lr_at(WARMUP)
    assert schedule.lr_at(WARMUP - 1) == pytest.approx(LR, rel=1e-3)
    assert schedule.lr_at(WARMUP + 1) == pytest.approx(LR, rel=1e-3)


def test_multiplier_is_picklable():
    schedule = inverse_sqrt_multiplier(lr=LR, warmup_updates=WARMUP, warmup_init_lr=INIT)
    assert pickle.loads(pickle.dumps(schedule)) == schedule


def _adamw(lr: float = 0.123) -> torch.optim.AdamW:
    model = torch.nn.Linear(3, 2)
    return torch.optim.AdamW(model.parameters(), lr=lr)


def test_optimizer_lr_follows_schedule_through_lambdalr():
    train = TrainConfig(lr=LR, warmup_updates=4, warmup_init_lr=INIT)
    optimizer = _adamw()  # another lr on purpose: build_scheduler sets the base to train.lr
    scheduler = build_scheduler(optimizer, train)
    expected = inverse_sqrt_multiplier(lr=LR, warmup_updates=4, warmup_init_lr=INIT)
    hand = {0: INIT, 2: INIT + (LR - INIT) / 2, 4: LR, 16: LR / 2}
    for k in range(17):
        lr_now = optimizer.param_groups[0]["lr"]
        assert lr_now == pytest.approx(expected.lr_at(k), rel=1e-12)
        if k in hand:
            assert lr_now == pytest.approx(hand[k], rel=1e-12)
        optimizer.step()
        scheduler.step()


def test_scheduler_state_survives_a_weights_only_checkpoint(tmp_path):
    train = TrainConfig(lr=LR, warmup_updates=4, warmup_init_lr=INIT)
    optimizer = _adamw()
    scheduler = build_scheduler(optimizer, train)
    for _ in range(6):
        optimizer.step()
        scheduler.step()
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    save_checkpoint(tmp_path / "c.pt", state)

    # Resume as the trainer does: build both, then load both states.
    fresh_optimizer = _adamw()
    fresh = build_scheduler(fresh_optimizer, train)
    loaded = load_checkpoint(tmp_path / "c.pt")
    fresh_optimizer.load_state_dict(loaded["optimizer"])
    fresh.load_state_dict(loaded["scheduler"])
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    for _ in range(3):
        optimizer.step()
        scheduler.step()
        fresh_optimizer.step()
        fresh.step()
        assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(LR * math.sqrt(4 / 9))


def test_rejects_nonsense():
    with pytest.raises(ValueError, match="lr"):
        inverse_sqrt_multiplier(lr=0.0, warmup_updates=10, warmup_init_lr=0.0)
    with pytest.raises(ValueError, match="warmup_updates"):
        inverse_sqrt_multiplier(lr=1.0, warmup_updates=-1, warmup_init_lr=0.0)
