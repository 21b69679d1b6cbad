"""The training loop against known answers.

Resumed training equals uninterrupted training bit for bit (model, optimizer, scheduler,
RNG streams, logged metrics), across epoch boundaries and after a signal; a tiny model
overfits 64 pairs; non-finite updates are skipped, counted and eventually fatal;
metrics.jsonl holds what a fresh computation gives; a run directory refuses a changed model;
best.pt and early stopping follow the validation scores.

All runs are single-threaded on the CPU, where the same program gives the same bits.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from _shared import assert_equal_tree

from nmt.checkpoint import load_checkpoint
from nmt.data.batching import batches_for_epoch, collate
from nmt.data.tokenizer import PAD_ID
from nmt.errors import TrainingError
from nmt.runtime import Runtime
from nmt.training import step as step_module
from nmt.training.loss import LossSums, label_smoothed_loss
from nmt.training.metrics import read_metrics
from nmt.training.schedule import inverse_sqrt_multiplier
from nmt.training.trainer import Trainer, TrainingInterrupted, TrainResult
from nmt.training.validation import dev_loss

CPU = Runtime(torch.device("cpu"), "fp32")

# Dropout on (so the RNG state must be restored), gradient accumulation, a warmup that ends
# inside the run, validation (best.pt, best_score) and a checkpoint after every update.
RESUME = (
    "model.dropout=0.1",
    "train.update_freq=2",
    "train.warmup_updates=4",
    "train.valid_every=4",
    "train.best_metric=loss",
    "train.save_every=1",
    "train.keep_last=100",
)
PROGRESS = (
    "step",
    "epoch",
    "position",
    "best_score",
    "bad_validations",
    "nonfinite_in_row",
    "nonfinite_total",
)
LOGGED = ("kind", "step", "epoch", "loss", "nll", "ppl", "lr", "grad_norm", "padding")


def fit(cfg, logs: list[str] | None = None) -> TrainResult:
    log = logs.append if logs is not None else (lambda message: None)
    return Trainer(cfg, CPU, log=log).fit()


def ckpt(run_dir: Path, name: str = "last.pt") -> dict:
    return load_checkpoint(run_dir / "checkpoints" / name)


def metrics(run_dir: Path, kind: str | None = None) -> list[dict]:
    records = read_metrics(run_dir / "metrics.jsonl")
    return [r for r in records if kind is None or r["kind"] == kind]


def assert_same_training_state(a: dict, b: dict, *, progress=PROGRESS) -> None:
    for key in ("model", "optimizer", "scheduler", "scaler", "rng"):
        assert_equal_tree(a[key], b[key], key)
    assert {k: a["train_state"][k] for k in progress} == {k: b["train_state"][k] for k in progress}


def logged(run_dir: Path, *, up_to: int) -> list[tuple]:
    """What a run logged (minus wall-clock fields and resume marks), through update `up_to`."""
    records = [r for r in metrics(run_dir) if r["step"] <= up_to and r["kind"] != "resume"]
    return [tuple(r.get(k) for k in LOGGED) for r in records]


def scheduled(records: list[tuple]) -> list[tuple]:
    """The training records, and the validations that RESUME's valid_every (4) made."""
    return [r for r in records if r[0] != "valid" or r[1] % 4 == 0]


def clone_params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


# --------------------------------------------------------------------------- one update


@pytest.mark.parametrize("clip_norm", [0.0, 0.1])
def test_an_update_is_the_token_mean_over_all_its_batches(tiny_corpus, tmp_path, clip_norm):
    """update_freq=2: the gradient is that of (sum of both batches' losses) / (their tokens),
    scaled by clip_norm / norm when it is longer than train.clip_norm (0 = no clipping)."""
    run = tiny_corpus.new_run(tmp_path / "run")
    cfg = tiny_corpus.config(
        run,
        "model.dropout=0",
        "train.update_freq=2",
        "train.max_updates=1",
        f"train.clip_norm={clip_norm}",
    )
    trainer = Trainer(cfg, CPU, log=lambda message: None)
    model = copy.deepcopy(trainer.model)
    group = batches_for_epoch(trainer.batches, seed=cfg.train.seed, epoch=0)[:2]
    batches = [collate(trainer.train_src, trainer.train_tgt, indices) for indices in group]
    assert batches[0].num_tgt_tokens != batches[1].num_tgt_tokens  # a mean of means would differ
    total = sum(sum_loss(model, b) for b in batches) / sum(b.num_tgt_tokens for b in batches)
    total.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads.values()])))
    assert norm > 0.1  # so clipping at 0.1 has work to do
    scale = min(1.0, clip_norm / (norm + 1e-6)) if clip_norm else 1.0  # clip_grad_norm_'s

    seen: dict[str, torch.Tensor] = {}

    def capture(optimizer, args, kwargs):  # what AdamW is given
        seen.update({name: p.grad.clone() for name, p in trainer.model.named_parameters()})

    trainer.optimizer.register_step_pre_hook(capture)
    trainer.fit()
    assert seen.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(seen[name], grad * scale, rtol=1e-5, atol=1e-7, msg=name)
    (record,) = metrics(run, "train")
    assert record["grad_norm"] == pytest.approx(norm, rel=1e-5)  # the norm before clipping
    assert record["loss"] == pytest.approx(float(total.detach()), rel=1e-5)


def sum_loss(model, batch) -> torch.Tensor:
    logits = model(batch.src_ids, batch.tgt_in)
    return label_smoothed_loss(logits, batch.tgt_out, epsilon=0.1, ignore_index=PAD_ID).loss


# --------------------------------------------------------------------------- exact resume


@dataclass(frozen=True)
class Reference:
    """An uninterrupted run with a checkpoint after every update."""

    run_dir: Path
    batches_per_epoch: int
    updates_per_epoch: int  # update_freq=2: ceil(batches / 2)
    max_updates: int

    def checkpoint(self, step: int) -> dict:
        return ckpt(self.run_dir, f"step_{step}.pt")


@pytest.fixture(scope="module")
def reference(tiny_corpus, tmp_path_factory) -> Reference:
    batches = tiny_corpus.num_batches()
    per_epoch = math.ceil(batches / 2)
    max_updates = 2 * (per_epoch + 2)  # covers every case of test_resumed_training...
    run = tiny_corpus.new_run(tmp_path_factory.mktemp("reference"))
    fit(tiny_corpus.config(run, *RESUME, f"train.max_updates={max_updates}"))
    return Reference(run, batches, per_epoch, max_updates)


@pytest.mark.parametrize("case", ["mid_epoch", "at_epoch_end", "second_epoch"])
def test_resumed_training_equals_uninterrupted_training(tiny_corpus, reference, tmp_path, case):
    k = {
        "mid_epoch": reference.updates_per_epoch - 1,
        "at_epoch_end": reference.updates_per_epoch,
        "second_epoch": reference.updates_per_epoch + 2,
    }[case]
    run = tiny_corpus.new_run(tmp_path / "run")
    fit(tiny_corpus.config(run, *RESUME, f"train.max_updates={k}"))
    stopped = ckpt(run)["train_state"]
    assert stopped["step"] == k
    # The checkpoint lies where the case says; the epoch boundary comes after it.
    if case == "mid_epoch":
        assert stopped["epoch"] == 0 and 0 < stopped["position"] < reference.batches_per_epoch
    elif case == "at_epoch_end":
        assert (stopped["epoch"], stopped["position"]) == (0, reference.batches_per_epoch)
    else:
        assert stopped["epoch"] == 1
    logs: list[str] = []
    result = fit(tiny_corpus.config(run, *RESUME, f"train.max_updates={2 * k}"), logs)
    assert f"resuming from {run / 'checkpoints' / 'last.pt'} at update {k}" in logs
    resumes = [(r["step"], r["checkpoint"]) for r in metrics(run, "resume")]
    assert resumes == [(k, str(run / "checkpoints" / "last.pt"))]  # what `nmt plot` marks
    assert result.state.step == 2 * k
    assert result.state.epoch > stopped["epoch"]
    # Each leg ends with a validation unless valid_every (4 in RESUME) has just made one; the
    # uninterrupted reference makes neither. A validation reads the model and changes
    # nothing else: only which score is best may differ, and the log has those records.
    extra_validation = k % 4 != 0
    unchanged = [p for p in PROGRESS if p not in ("best_score", "bad_validations")]
    progress = unchanged if extra_validation else PROGRESS
    assert_same_training_state(ckpt(run), reference.checkpoint(2 * k), progress=progress)
    resumed = logged(run, up_to=2 * k)
    finals = [r[1] for r in resumed if r[0] == "valid" and r[1] % 4]
    assert finals == [step for step in (k, 2 * k) if step % 4]
    assert scheduled(resumed) == scheduled(logged(reference.run_dir, up_to=2 * k))


def test_the_last_update_is_validated_once(tiny_corpus, tmp_path):
    """A run that stops between two valid_every validations validates its last update, which
    can become best.pt; running the finished run again validates nothing more."""
    run = tiny_corpus.new_run(tmp_path / "run")
    cfg = tiny_corpus.config(run, *RESUME, "train.max_updates=6", "train.save_every=1000")
    fit(cfg)
    assert [r["step"] for r in metrics(run, "valid")] == [4, 6]
    assert ckpt(run)["train_state"]["validated_step"] == 6
    losses = [r["loss"] for r in metrics(run, "valid")]
    assert losses[1] < losses[0]  # so the last update is the best model
    assert ckpt(run, "best.pt")["train_state"]["step"] == 6
    fit(cfg)
    assert [r["step"] for r in metrics(run, "valid")] == [4, 6]


def test_ctrl_c_during_the_last_validation_loses_nothing(tiny_corpus, tmp_path, monkeypatch):
    """SIGINT while the final model is being validated: the run still saves that model as
    last.pt and best.pt (the signal handlers are still the trainer's), rather than dying
    with the updates since the last checkpoint unsaved."""
    original = Trainer.validate

    def validate(self):
        if self.state.step == 6:
            assert signal.getsignal(signal.SIGINT) not in (
                signal.default_int_handler,
                signal.SIG_DFL,
            )
            signal.raise_signal(signal.SIGINT)
        return original(self)

    monkeypatch.setattr(Trainer, "validate", validate)
    run = tiny_corpus.new_run(tmp_path / "run")
    fit(tiny_corpus.config(run, *RESUME, "train.max_updates=6", "train.save_every=1000"))
    assert ckpt(run)["train_state"]["step"] == 6
    assert ckpt(run, "best.pt")["train_state"]["step"] == 6


def test_max_epochs_stops_after_the_last_batch_of_an_epoch(tiny_corpus, tmp_path):
    batches = tiny_corpus.num_batches()
    per_epoch = math.ceil(batches / 2)  # update_freq=2; the last update may hold one batch
    run = tiny_corpus.new_run(tmp_path / "run")
    result = fit(tiny_corpus.config(run, "train.update_freq=2", "train.max_epochs=1"))
    s = result.state
    assert (s.step, s.epoch, s.position) == (per_epoch, 0, batches)
    assert s.stop_reason == "reached train.max_epochs (1)"
    result = fit(tiny_corpus.config(run, "train.update_freq=2", "train.max_epochs=2"))
    s = result.state
    assert (s.step, s.epoch, s.position) == (2 * per_epoch, 1, batches)


# --------------------------------------------------------------------------- signals


def raise_signal_after(monkeypatch, signum: int, step: int) -> None:
    """Deliver a real signal to this process right after update `step`."""
    original = Trainer._after_update

    def after_update(self, stats, window, validations):
        original(self, stats, window, validations)
        if self.state.step == step:
            # The trainer's handler must be in place, or the signal would hit pytest itself.
            assert signal.getsignal(signum) not in (signal.default_int_handler, signal.SIG_DFL)
            signal.raise_signal(signum)

    monkeypatch.setattr(Trainer, "_after_update", after_update)


def test_sigint_saves_and_the_rerun_equals_an_uninterrupted_run(
    tiny_corpus, reference, tmp_path, monkeypatch
):
    run = tiny_corpus.new_run(tmp_path / "run")
    cfg = tiny_corpus.config(run, *RESUME, f"train.max_updates={reference.max_updates}")
    stop_at = reference.updates_per_epoch + 1  # inside the second epoch
    handler = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as m:
        raise_signal_after(m, signal.SIGINT, stop_at)
        with pytest.raises(TrainingInterrupted) as interrupted:
            fit(cfg)
    last = run / "checkpoints" / "last.pt"
    assert interrupted.value.exit_code == 130
    assert str(interrupted.value) == (
        f"SIGINT received: saved {last}; run the same command again to resume"
    )
    assert ckpt(run)["train_state"]["step"] == stop_at
    assert signal.getsignal(signal.SIGINT) == handler  # the previous handler is back
    result = fit(cfg)
    assert result.state.step == reference.max_updates
    assert_same_training_state(ckpt(run), reference.checkpoint(reference.max_updates))


def test_sigterm_saves_with_exit_code_143_and_restores_the_handlers(
    tiny_corpus, tmp_path, monkeypatch
):
    run = tiny_corpus.new_run(tmp_path / "run")
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    raise_signal_after(monkeypatch, signal.SIGTERM, 1)
    with pytest.raises(TrainingInterrupted) as interrupted:
        fit(tiny_corpus.config(run, "train.max_updates=1000"))
    assert interrupted.value.exit_code == 128 + signal.SIGTERM
    assert str(interrupted.value).startswith(f"SIGTERM received: saved {run / 'checkpoints'}")
    assert ckpt(run)["train_state"]["step"] == 1
    assert {s: signal.getsignal(s) for s in before} == before


def test_ctrl_c_in_the_cli_saves_exits_130_and_the_rerun_resumes(tiny_corpus, tmp_path):
    run = tiny_corpus.new_run(tmp_path / "run")
    command = [
        sys.executable,
        "-m",
        "nmt.cli",
        "train",
        *tiny_corpus.cli_args(run, "train.max_updates=100000"),
        "--no-evaluate",
    ]
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(180, proc.kill)  # a hang fails the test instead of blocking
    watchdog.start()
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if re.match(r"update +\d+ \|", line):  # the first metrics line: inside the loop
                proc.send_signal(signal.SIGINT)
                break
        _, rest = proc.communicate(timeout=180)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = "".join(seen) + rest
    last = run / "checkpoints" / "last.pt"
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.rstrip().splitlines()[-1] == (
        f"error: SIGINT received: saved {last}; run the same command again to resume"
    )
    step = ckpt(run)["train_state"]["step"]
    assert step >= 1
    assert [r["step"] for r in metrics(run, "train")] == list(range(1, step + 1))
    logs: list[str] = []
    result = fit(tiny_corpus.config(run, f"train.max_updates={step + 2}"), logs)
    assert f"resuming from {last} at update {step}" in logs
    assert result.state.step == step + 2
    assert [r["step"] for r in metrics(run, "train")] == list(range(1, step + 3))


# --------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_a_tiny_model_overfits_64_pairs(tiny_corpus, tmp_path):
    run = tiny_corpus.new_run(tmp_path / "run")
    cfg = tiny_corpus.config(
        run,
        "model.dropout=0",
        "train.label_smoothing=0",
        "train.lr=5e-3",
        "train.warmup_updates=30",
        "train.max_updates=200",
        "train.log_every=20",
        "train.valid_every=200",
    )
    fit(cfg)
    train = metrics(run, "train")
    assert [r["step"] for r in train] == list(range(20, 201, 20))
    assert train[0]["nll"] > 4.0
    assert train[-1]["nll"] < 1.0, [round(r["nll"], 3) for r in train]
    # Memorised, not learned: the dev set (unseen) stays far worse.
    (valid,) = metrics(run, "valid")
    assert valid["nll"] > train[-1]["nll"] + 1.5


# --------------------------------------------------------------------------- non-finite


def make_loss_nan(monkeypatch, calls: set[int]) -> None:
    """The loss of the given calls (1-based, one call per batch) becomes NaN."""
    counter = itertools.count(1)

    def loss(logits, target, *, epsilon, ignore_index):
        sums = label_smoothed_loss(logits, target, epsilon=epsilon, ignore_index=ignore_index)
        if next(counter) not in calls:
            return sums
        nan = torch.tensor(float("nan"))
        return LossSums(loss=sums.loss * nan, nll=sums.nll * nan, tokens=sums.tokens)

    monkeypatch.setattr(step_module, "label_smoothed_loss", loss)


def test_only_non_finite_losses_stop_training_with_parameters_untouched(
    tiny_corpus, tmp_path, monkeypatch
):
    run = tiny_corpus.new_run(tmp_path / "run")
    make_loss_nan(monkeypatch, set(range(1, 100)))
    logs: list[str] = []
    trainer = Trainer(
        tiny_corpus.config(run, "train.max_nonfinite_in_row=3", "train.max_updates=10"),
        CPU,
        log=logs.append,
    )
    initial = clone_params(trainer)
    with pytest.raises(TrainingError) as error:
        trainer.fit()
    assert str(error.value).startswith(
        "3 non-finite losses/gradients in a row (train.max_nonfinite_in_row) at update 0"
    )
    s = trainer.state
    assert (s.step, s.nonfinite_in_row, s.nonfinite_total) == (0, 3, 3)
    assert sum("update skipped" in line for line in logs) == 3
    assert_equal_tree(clone_params(trainer), initial, "model")
    assert trainer.optimizer.state_dict()["state"] == {}  # Adam never stepped
    assert not (run / "checkpoints" / "last.pt").exists()
    assert not (run / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    "nan_calls, message",
    [
        ({2}, "update 2: non-finite loss or gradient, update skipped (1 in a row, 1 in total)"),
        # Two in a row twice: the run of skips restarts after a good update, so a limit
        # of 3 is never reached.
        (
            {2, 3, 5, 6},
            "update 3: non-finite loss or gradient, update skipped (2 in a row, 4 in total)",
        ),
    ],
)
def test_non_finite_updates_are_skipped_and_counted(
    tiny_corpus, tmp_path, monkeypatch, nan_calls, message
):
    run = tiny_corpus.new_run(tmp_path / "run")
    make_loss_nan(monkeypatch, nan_calls)
    seen: list[tuple[int, bool, dict]] = []
    original = Trainer._after_update

    def after_update(self, stats, window, validations):
        seen.append((self.state.step, stats.finite, clone_params(self)))
        original(self, stats, window, validations)

    monkeypatch.setattr(Trainer, "_after_update", after_update)
    logs: list[str] = []
    cfg = tiny_corpus.config(run, "train.max_nonfinite_in_row=3", "train.max_updates=3")
    result = fit(cfg, logs)
    s = result.state
    assert (s.step, s.nonfinite_in_row, s.nonfinite_total) == (3, 0, len(nan_calls))
    assert message in logs
    # A skipped update consumes its batch but changes no parameter.
    assert s.position == 3 + len(nan_calls)
    assert [finite for _, finite, _ in seen] == [
        i not in nan_calls for i in range(1, 4 + len(nan_calls))
    ]
    for (prev_step, _, prev_params), (step, finite, params) in itertools.pairwise(seen):
        if not finite:
            assert step == prev_step
            assert_equal_tree(params, prev_params, "model")
    records = metrics(run, "train")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert ckpt(run)["train_state"]["nonfinite_total"] == len(nan_calls)


# --------------------------------------------------------------------------- metrics.jsonl

TRAIN_KEYS = {
    "step",
    "lr",
    "loss",
    "nll",
    "ppl",
    "tgt_tokens_per_s",
    "tokens_per_s",
    "padding",
    "grad_norm",
    "memory_mb",
}


def test_metrics_records_hold_known_values_and_resume_drops_later_ones(
    tiny_corpus, tmp_path, monkeypatch
):
    run = tiny_corpus.new_run(tmp_path / "run")
    cfg = tiny_corpus.config(
        run,
        "model.dropout=0",
        "train.warmup_updates=4",
        "train.max_updates=4",
        "train.valid_every=2",
        "train.save_every=2",
        "train.keep_last=10",
        "train.best_metric=loss",
        "train.valid_bleu=true",
        "train.valid_bleu_max_sentences=8",
    )
    # Known answer for update 1: the initial model's mean nll on the first batch.
    fresh = Trainer(cfg, CPU, log=lambda m: None)
    (indices,) = fresh._next_group()
    batch = collate(fresh.train_src, fresh.train_tgt, indices)
    with torch.no_grad():
        logits = fresh.model(batch.src_ids, batch.tgt_in)
    first_nll = (
        float(label_smoothed_loss(logits, batch.tgt_out, epsilon=0.1, ignore_index=PAD_ID).nll)
        / batch.num_tgt_tokens
    )

    # A crash after update 3 leaves a record newer than the last checkpoint (update 2).
    with monkeypatch.context() as m:
        original = Trainer._after_update

        def crash_after_3(self, stats, window, validations):
            original(self, stats, window, validations)
            if self.state.step == 3:
                raise RuntimeError("simulated crash")

        m.setattr(Trainer, "_after_update", crash_after_3)
        with pytest.raises(RuntimeError, match="simulated crash"):
            fit(cfg)
    assert [r["step"] for r in metrics(run, "train")] == [1, 2, 3]
    assert ckpt(run)["train_state"]["step"] == 2
    fit(cfg)

    train, valid = metrics(run, "train"), metrics(run, "valid")
    assert [r["step"] for r in train] == [1, 2, 3, 4]  # step 3 once: the stale one went
    assert [r["step"] for r in valid] == [2, 4]
    schedule = inverse_sqrt_multiplier(lr=cfg.train.lr, warmup_updates=4, warmup_init_lr=1e-7)
    for r in train:
        assert r.keys() >= TRAIN_KEYS
        assert r["ppl"] == pytest.approx(math.exp(r["nll"]), rel=1e-12)
        assert r["lr"] == pytest.approx(schedule.lr_at(r["step"]), rel=1e-12)
        assert r["loss"] != r["nll"]  # label smoothing 0.1
        assert r["tokens_per_s"] > r["tgt_tokens_per_s"] > 0
        assert 0 <= r["padding"] < 1 and r["grad_norm"] > 0 and r["memory_mb"] > 0
    assert train[0]["nll"] == pytest.approx(first_nll, rel=1e-6)
    for r in valid:
        assert {"loss", "nll", "ppl", "bleu"} <= r.keys()
        assert r["ppl"] == pytest.approx(math.exp(r["nll"]), rel=1e-12)
        assert 0 <= r["bleu"] <= 100
        # Known answer: the dev loss of the checkpoint saved at that update.
        fresh.model.load_state_dict(ckpt(run, f"step_{r['step']}.pt")["model"])
        expected = dev_loss(fresh.model.eval(), cfg, CPU)
        assert (r["loss"], r["nll"]) == pytest.approx((expected["loss"], expected["nll"]))
    best_step = min(valid, key=lambda r: r["loss"])["step"]
    assert ckpt(run, "best.pt")["train_state"]["step"] == best_step


# --------------------------------------------------------------------------- resumability


# Which settings a resume takes or refuses: tests/training/test_resume.py


# --------------------------------------------------------------------------- best.pt, patience


@pytest.mark.parametrize(
    "metric, scores",
    [
        ("loss", [{"loss": v} for v in (3.0, 2.0, 2.5, 1.5, 1.5, 1.9)]),
        ("bleu", [{"loss": 1.0, "bleu": v} for v in (10.0, 12.0, 11.0, 15.0, 15.0, 13.0)]),
    ],
)
def test_best_checkpoint_follows_validation_and_patience_stops(
    tiny_corpus, tmp_path, monkeypatch, metric, scores
):
    scripted = iter(scores)
    monkeypatch.setattr(
        "nmt.training.validation.validation_scores", lambda *args: dict(next(scripted))
    )
    run = tiny_corpus.new_run(tmp_path / "run")
    cfg = tiny_corpus.config(
        run,
        f"train.best_metric={metric}",
        "train.patience=2",
        "train.valid_every=1",
        "train.keep_last=10",
        "train.max_updates=100",
    )
    result = fit(cfg)
    # Best at validation 4; 5 only ties and 6 is worse: patience 2 is used up at update 6.
    assert result.state.step == 6
    assert result.state.stop_reason == "no improvement in 2 validations (train.patience)"
    assert result.state.bad_validations == 2
    assert [r["step"] for r in result.validations] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in metrics(run, "valid")] == [1, 2, 3, 4, 5, 6]
    best = ckpt(run, "best.pt")
    assert best["train_state"]["step"] == 4
    assert_equal_tree(best["model"], ckpt(run, "step_4.pt")["model"], "model")
    # Saved when a validation improves, and at the end; nothing else (save_every=1000).
    names = {p.name for p in (run / "checkpoints").iterdir()}
    assert names == {"step_1.pt", "step_2.pt", "step_4.pt", "step_6.pt", "last.pt", "best.pt"}
