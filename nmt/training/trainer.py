"""The training loop: token-budget batches, accumulation, mixed precision, clipping,
validation, checkpoints with exact resume, early stopping, DDP, clean interruption.

One update = `update_freq` batches per process. The loss is the label-smoothed sum over every
target token of the update (all batches, all processes) divided by that token count, so the
gradient does not depend on how the update is split into batches or processes.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from nmt.checkpoint import (
    bytes_to_tensor,
    capture_rng_state,
    check_model_schema,
    model_for,
    restore_rng_state,
    tokenizer_fingerprint,
)
from nmt.config import ExperimentConfig, config_to_dict, write_resolved_config
from nmt.data.batching import batches_for_epoch, collate, make_batches, weighted_batches
from nmt.data.prepare import data_fingerprint, load_corpus_mix, load_prepared, prepared_dir
from nmt.data.tokenizer import Tokenizer
from nmt.errors import CheckpointError, NmtError, TrainingError
from nmt.model.transformer import Transformer
from nmt.runtime import Runtime, peak_memory_mb, seed_everything
from nmt.training.checkpoints import CheckpointManager
from nmt.training.init_from import load_init_weights, restored_init_source
from nmt.training.metrics import MetricsLog, Window
from nmt.training.progress import ProgressBar
from nmt.training.resume import (
    check_restored_optimizer,
    check_restored_scheduler,
    check_same_data,
    check_same_settings,
    check_training_state,
)
from nmt.training.schedule import build_scheduler
from nmt.training.step import StepParts, training_step


class TrainingInterrupted(NmtError):
    """SIGINT/SIGTERM arrived: a checkpoint was saved and the run can be resumed."""

    def __init__(self, signum: int, checkpoint: Path):
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} received: saved {checkpoint}; run the same command again to resume"
        )


@dataclass
class TrainState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of this epoch's (sharded) list already consumed
    best_score: float | None = None
    bad_validations: int = 0
    nonfinite_in_row: int = 0
    nonfinite_total: int = 0
    elapsed: float = 0.0  # wall seconds in the training loop, summed over resumed sessions
    stop_reason: str = ""
    validated_step: int | None = None  # the update the last validation saw


@dataclass
class TrainResult:
    state: TrainState
    run_dir: Path
    checkpoints: Path
    validations: list[dict] = field(default_factory=list)


@dataclass
class UpdateStats:
    loss: float  # label-smoothed loss sum (this process)
    nll: float
    tgt_tokens: int
    src_tokens: int
    slots: int  # padded token slots, source + target
    grad_norm: float
    finite: bool
    seconds: float = 0.0  # wall time of the update (validation and saving excluded)


class Trainer:
    def __init__(self, cfg: ExperimentConfig, runtime: Runtime, *, log=None):
        self.cfg = cfg
        self.rt = runtime
        self._log = log
        self.run_dir = cfg.run_path
        seed_everything(cfg.train.seed)
        self.tokenizer = Tokenizer.load(prepared_dir(cfg))
        self.model = self._build_model()
        self.train_model = self._wrap_model(self.model)
        self.optimizer = self._build_optimizer()
        self.scheduler = build_scheduler(self.optimizer, cfg.train)
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.precision == "fp16")
        self.train_src, self.train_tgt = load_prepared(cfg, cfg.data.train_split)
        # data.corpora: the pairs, hence the batches, of an epoch depend on the epoch.
        self.mix = load_corpus_mix(cfg, len(self.train_src))
        self.batches = self._make_batches(epoch=0)
        self.checkpoints = CheckpointManager(
            self.run_dir / "checkpoints", keep_last=cfg.train.keep_last
        )
        self.metrics = MetricsLog(
            self.run_dir / "metrics.jsonl",
            enabled=runtime.is_main,
            tensorboard=self.run_dir / "tensorboard" if cfg.train.tensorboard else None,
        )
        self.state = TrainState()
        self._signal: int | None = None  # agreed by every process: stop after this update
        self._signal_received: int | None = None  # set by this process's handler
        self._bar: ProgressBar | None = None
        self._epoch_cache: tuple[int, list[np.ndarray]] = (-1, [])
        self._data_fingerprint: str | None = None  # computed once, at the first need
        # The checkpoint this run started from (train.init_from), as its checkpoints record it.
        self.init_source: dict | None = None

    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(message)
        elif self._bar is not None:
            self._bar.print(message)
        else:
            print(message, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ construction

    def _build_model(self) -> Transformer:
        return model_for(self.cfg, self.tokenizer).to(self.rt.device)

    def _wrap_model(self, model: Transformer) -> torch.nn.Module:
        """DDP and/or torch.compile wrappers; checkpoints always hold `self.model`."""
        wrapped: torch.nn.Module = model
        if self.rt.distributed:
            ids = [self.rt.device.index] if self.rt.device.type == "cuda" else None
            wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if self.cfg.train.compile:
            wrapped = torch.compile(wrapped)
        return wrapped

    def _build_optimizer(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        return torch.optim.AdamW(
            self.model.parameters(),
            lr=t.lr,
            betas=t.adam_betas,
            eps=t.adam_eps,
            weight_decay=t.weight_decay,
            # One fused kernel for all parameters on CUDA and on the CPU: on the CPU the
            # default per-tensor loop costs 270 ms per step for the base model, fused 73 ms.
            fused=self.rt.device.type in ("cuda", "cpu"),
        )

    # ------------------------------------------------------------------ main loop

    def fit(self) -> TrainResult:
        """Train until a stop condition; resumes from the run directory's last checkpoint."""
        self._resume_if_possible()
        if self.rt.is_main:
            write_resolved_config(self.cfg)
            self._announce()
        validations: list[dict] = []
        window = Window()
        bar = ProgressBar(
            total=self.cfg.train.max_updates,
            done=self.state.step,
            enabled=self.rt.is_main and self._log is None,
            max_seconds=(self.cfg.train.max_minutes or 0) * 60,
            elapsed=self.state.elapsed,
        )
        with self._signals_caught(), bar, self.metrics:
            self._bar = bar
            while not self._stop_reason():
                started = time.perf_counter()
                stats = self._train_update(self._next_group())
                stats.seconds = time.perf_counter() - started
                window.add(stats)
                self._after_update(stats, window, validations)
                bar.advance(self.state.step, f"loss {stats.loss / max(stats.tgt_tokens, 1):.3f}")
                # Wall time of the whole iteration (validation and saving included): what
                # train.max_minutes limits. Throughput uses the update time alone.
                self.state.elapsed += time.perf_counter() - started
                self._agree_on_stopping()
            # Still under the signal handlers: a Ctrl-C now waits for the save below.
            is_best = self._signal is None and self._validate_the_last_update(validations)
        if self._signal is not None:
            raise TrainingInterrupted(self._signal, self._save(is_best=False))
        self.state.stop_reason = self._stop_reason()
        self._save(is_best=is_best)
        self.log(f"training stopped at update {self.state.step}: {self.state.stop_reason}")
        return TrainResult(self.state, self.run_dir, self.checkpoints.directory, validations)

    def _after_update(self, stats: UpdateStats, window: Window, validations: list[dict]) -> None:
        t = self.cfg.train
        step = self.state.step
        if stats.finite and step % t.log_every == 0:
            self._log_training(window)
            window.reset()
        is_best = False
        if stats.finite and step % t.valid_every == 0:
            record = self.validate()
            validations.append(record)
            is_best = self._track_best(record)
        if stats.finite and (step % t.save_every == 0 or is_best):
            self._save(is_best=is_best)

    def _validate_the_last_update(self, validations: list[dict]) -> bool:
        """Validate the final model unless valid_every just did; True if it is the best.

        The updates since the last validation (train.max_minutes, or max_updates not a
        multiple of valid_every) must not be lost to best.pt; fairseq does the same at
        max_update. A rerun of a finished run finds it validated and does nothing.
        """
        if self.state.step == 0 or self.state.validated_step == self.state.step:
            return False
        record = self.validate()
        validations.append(record)
        return self._track_best(record)

    def _stop_reason(self) -> str:
        t, s = self.cfg.train, self.state
        if self._signal is not None:
            return "interrupted"
        if s.step >= t.max_updates:
            return f"reached train.max_updates ({t.max_updates})"
        if t.max_epochs and self._epochs_done() >= t.max_epochs:
            return f"reached train.max_epochs ({t.max_epochs})"
        if t.max_minutes and s.elapsed >= t.max_minutes * 60:
            return f"reached train.max_minutes ({t.max_minutes:g})"
        if t.patience and s.bad_validations >= t.patience:
            return f"no improvement in {t.patience} validations (train.patience)"
        return ""

    def _epochs_done(self) -> int:
        """Whole epochs trained: the current one counts once its last batch is used (the
        roll-over to the next epoch only happens when that epoch's first batch is fetched)."""
        s = self.state
        return s.epoch + (0 < len(self._epoch_batches(s.epoch)) <= s.position)

    def _agree_on_stopping(self) -> None:
        """Processes must stop after the same update, or the others wait forever in the next
        collective: all adopt a signal any of them received and the longest elapsed time."""
        received = self._signal_received or self._signal or 0
        elapsed = self.state.elapsed
        if self.rt.distributed:
            shared = torch.tensor([received, elapsed], dtype=torch.float64, device=self.rt.device)
            dist.all_reduce(shared, op=dist.ReduceOp.MAX)
            received, elapsed = shared.tolist()
        self._signal = int(received) or None
        self.state.elapsed = elapsed

    # ------------------------------------------------------------------ data order

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        if self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, self._shard_for_epoch(epoch))
        return self._epoch_cache[1]

    def _make_batches(self, *, epoch: int) -> list[np.ndarray]:
        """All batches of `epoch` before shuffling; one list for every epoch of one corpus."""
        lengths, t = (self.train_src.lengths, self.train_tgt.lengths), self.cfg.train
        if self.mix is None:
            return make_batches(*lengths, max_tokens=t.max_tokens)
        return weighted_batches(
            *lengths, self.mix, max_tokens=t.max_tokens, seed=t.seed, epoch=epoch
        )

    def _shard_for_epoch(self, epoch: int) -> list[np.ndarray]:
        return batches_for_epoch(
            self.batches if self.mix is None or epoch == 0 else self._make_batches(epoch=epoch),
            seed=self.cfg.train.seed,
            epoch=epoch,
            rank=self.rt.rank,
            world_size=self.rt.world_size,
        )

    def _next_group(self) -> list[np.ndarray]:
        """The next `update_freq` batches of this process; rolls over to a new epoch."""
        s = self.state
        batches = self._epoch_batches(s.epoch)
        if s.position >= len(batches):
            s.epoch, s.position = s.epoch + 1, 0
            batches = self._epoch_batches(s.epoch)
            if not batches:
                raise TrainingError(
                    "the training data gives no batch to this process; "
                    "use fewer processes or a smaller train.max_tokens"
                )
        group = batches[s.position : s.position + self.cfg.train.update_freq]
        s.position += len(group)
        return group

    # ------------------------------------------------------------------ one update

    def _train_update(self, group: list[np.ndarray]) -> UpdateStats:
        self.train_model.train()
        batches = [collate(self.train_src, self.train_tgt, idx).to(self.rt.device) for idx in group]
        tgt_tokens = sum(b.num_tgt_tokens for b in batches)
        step = training_step(self._step_parts(), batches, total_tokens=self._global_sum(tgt_tokens))
        if step.finite:
            self.state.step += 1
            self.state.nonfinite_in_row = 0
        else:
            self._count_nonfinite()
        return UpdateStats(
            loss=step.loss,
            nll=step.nll,
            tgt_tokens=tgt_tokens,
            src_tokens=sum(b.num_src_tokens for b in batches),
            slots=sum(b.src_slots + b.tgt_slots for b in batches),
            grad_norm=step.grad_norm,
            finite=step.finite,
        )

    def _step_parts(self) -> StepParts:
        """Built per update: resuming may replace the optimizer, scheduler or scaler."""
        t = self.cfg.train
        return StepParts(
            model=self.model,
            run_model=self.train_model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            autocast=self.rt.autocast,
            label_smoothing=t.label_smoothing,
            clip_norm=t.clip_norm,
            world_size=self.rt.world_size,
            distributed=self.rt.distributed,
        )

    def _count_nonfinite(self) -> None:
        s, limit = self.state, self.cfg.train.max_nonfinite_in_row
        s.nonfinite_in_row += 1
        s.nonfinite_total += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.log(
            f"update {s.step + 1}: non-finite loss or gradient, update skipped "
            f"({s.nonfinite_in_row} in a row, {s.nonfinite_total} in total)"
        )
        if s.nonfinite_in_row >= limit:
            raise TrainingError(
                f"{limit} non-finite losses/gradients in a row (train.max_nonfinite_in_row) at "
                f"update {s.step}; lower train.lr, raise train.warmup_updates, or use fp32/bf16"
            )

    def _global_sum(self, value: int) -> int:
        if not self.rt.distributed:
            return value
        tensor = torch.tensor([value], device=self.rt.device, dtype=torch.float64)
        dist.all_reduce(tensor)
        return int(tensor.item())

    # ------------------------------------------------------------------ logging

    def _log_training(self, window: Window) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        record = window.summary() | {
            "step": self.state.step,
            "epoch": self.state.epoch,
            "lr": lr,
            "memory_mb": round(peak_memory_mb(self.rt.device), 1),
            "elapsed_s": round(self.state.elapsed, 2),
            "nonfinite_total": self.state.nonfinite_total,
        }
        self.metrics.write("train", record)
        if self.rt.is_main:
            self.log(
                f"update {record['step']:>7} | loss {record['loss']:.3f} | ppl {record['ppl']:.2f} "
                f"| lr {lr:.2e} | {record['tgt_tokens_per_s']:.0f} tgt tok/s "
                f"| pad {record['padding']:.1%} | gnorm {record['grad_norm']:.2f}"
            )

    def _announce(self) -> None:
        n = self.model.num_parameters()
        where = f"{self.rt.device} {self.rt.precision}"
        if self.rt.distributed:
            where += f" x{self.rt.world_size} processes"
        self.log(
            f"training {self.cfg.name}: {n / 1e6:.2f}M parameters on {where}; "
            f"{len(self.train_src)} pairs{self._mix_note()} in {len(self.batches)} batches of <= "
            f"{self.cfg.train.max_tokens} tokens; from update {self.state.step}"
        )

    def _mix_note(self) -> str:
        if self.mix is None:
            return ""
        return f" ({sum(self.mix.pairs_per_epoch())} an epoch by the data.corpora weights)"

    # ------------------------------------------------------------------ validation

    def validate(self) -> dict:
        """Dev loss/perplexity (and BLEU) with the unwrapped model, on the main process."""
        record: dict = {"step": self.state.step}
        if self.rt.is_main:
            record["elapsed_s"] = round(self.state.elapsed, 2)
            from nmt.training.validation import validation_scores

            record |= validation_scores(self.model, self.cfg, self.tokenizer, self.rt)
            self.metrics.write("valid", record)
            shown = ", ".join(
                f"{k} {v:.3f}" for k, v in record.items() if k not in ("step", "elapsed_s")
            )
            self.log(f"validation at update {self.state.step}: {shown}")
        record = self._broadcast(record)
        self.state.validated_step = self.state.step
        return record

    def _broadcast(self, record: dict) -> dict:
        if not self.rt.distributed:
            return record
        box = [record]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _track_best(self, record: dict) -> bool:
        metric = self.cfg.train.best_metric
        key = "bleu" if metric == "bleu" and "bleu" in record else "loss"
        score = record[key] if key == "bleu" else -record[key]  # higher is better
        s = self.state
        if s.best_score is None or score > s.best_score:
            s.best_score, s.bad_validations = score, 0
            return True
        s.bad_validations += 1
        return False

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint_state(self) -> dict:
        tok = self.tokenizer
        return {
            "config": config_to_dict(self.cfg),
            "spm": {"src": bytes_to_tensor(tok.src_model), "tgt": bytes_to_tensor(tok.tgt_model)},
            "fingerprint": self._fingerprint(),
            "vocab": {"src": tok.src_vocab_size, "tgt": tok.tgt_vocab_size, "joint": tok.joint},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "train_state": asdict(self.state),
            "rng": capture_rng_state(),
            "init_from": self.init_source,
        }

    def _save(self, *, is_best: bool) -> Path:
        if self.rt.is_main:
            try:
                self.checkpoints.save(
                    self._checkpoint_state(), step=self.state.step, is_best=is_best
                )
            except CheckpointError as exc:  # a full disk, say: say what the user can do
                raise CheckpointError(
                    f"{exc}; training stopped at update {self.state.step} (earlier checkpoints "
                    "are intact: fix the cause, then run the same command again to resume)"
                ) from exc
        if self.rt.distributed:
            dist.barrier()
        return self.checkpoints.directory / "last.pt"

    def _resume_if_possible(self) -> None:
        if self.rt.is_main:
            for path in self.checkpoints.remove_stale_temporaries():
                self.log(f"removed {path.name}, the unfinished file of an interrupted save")
        found = self.checkpoints.latest_loadable(check=self._restore)
        if found is None:
            # No checkpoint: any records in metrics.jsonl come from a run that died before
            # its first save (perhaps mid-line). This run redoes those updates: drop them.
            self.metrics.truncate_after(0)
            if self.cfg.train.init_from is not None:
                self._initialise_from_checkpoint()
            return
        path, _ = found
        self.metrics.truncate_after(self.state.step)
        self.log(f"resuming from {path} at update {self.state.step}")
        # Where a run was resumed (`nmt plot` marks it): the step and the file it continued.
        resumed = {"step": self.state.step, "elapsed_s": round(self.state.elapsed, 2)}
        self.metrics.write("resume", resumed | {"checkpoint": str(path)})

    def _initialise_from_checkpoint(self) -> None:
        """A new run from `train.init_from`'s weights; the optimizer, schedule, data position
        and RNG streams stay those of a fresh run (nothing else is read from the file)."""
        weights, source = load_init_weights(self.cfg, self.tokenizer)
        self.model.load_state_dict(weights)
        self.init_source = source.as_dict()
        step = "" if source.step is None else f" (update {source.step})"
        self.log(
            f"starting from the weights of {source.path}{step}, sha256 {source.sha256[:12]}: "
            "fresh optimizer, schedule and data position"
        )

    def _restore(self, path: Path, ckpt: dict) -> None:
        """Continue from `ckpt`, or refuse: `CheckpointError` for a file that is malformed
        (the resume falls back to an older one), `TrainingError` for one of other settings or
        data (no older file of the run would do either)."""
        saved = check_model_schema(path, ckpt)
        check_training_state(path, ckpt, TrainState)
        check_same_settings(path, saved.config, self.cfg)
        check_same_data(path, saved.fingerprint, self._fingerprint(), self.run_dir)
        init_source = restored_init_source(path, ckpt)
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            check_restored_optimizer(path, self.optimizer)
            self.scheduler.load_state_dict(ckpt["scheduler"])
            check_restored_scheduler(path, self.scheduler, self.optimizer)
            self.scaler.load_state_dict(ckpt["scaler"])
            restore_rng_state(ckpt["rng"])
        except Exception as exc:
            # torch's and numpy's loaders check little and fail in many ways (KeyError,
            # OverflowError, RuntimeError, ...): whichever, this file cannot continue the run.
            raise CheckpointError(
                f"cannot resume from {path}: its training state does not restore "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from exc
        self.state = TrainState(**ckpt["train_state"])
        self.state.stop_reason = ""
        self.init_source = init_source

    def _fingerprint(self) -> dict[str, str | None]:
        """What this run trains on: its tokenizer and its prepared data (see nmt.checkpoint)."""
        if self._data_fingerprint is None:
            self._data_fingerprint = data_fingerprint(self.cfg)
        tok = self.tokenizer
        return {
            "tokenizer": tokenizer_fingerprint(tok.src_model, tok.tgt_model),
            "data": self._data_fingerprint,
        }

    # ------------------------------------------------------------------ signals

    @contextlib.contextmanager
    def _signals_caught(self):
        """SIGINT/SIGTERM finish the current update, then save and stop."""

        def handler(signum, frame):
            self._signal_received = signum

        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
