"""The stages chained: `nmt prepare`, `nmt train` (then its test splits) and `nmt run`
(download if missing -> prepare -> train -> average -> test splits), with the checks that
refuse a setting before hours of work rather than after them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nmt.config import ExperimentConfig, write_resolved_config
from nmt.data.download import corpus_dir, download
from nmt.evaluation.metrics import check_bleu_tokenizer, configured_bleu_tokenizer
from nmt.files import command_line, run_lock, run_lock_if
from nmt.pipeline.evaluate import evaluate_test_splits, log

if TYPE_CHECKING:
    import torch

    from nmt.data.tokenizer import Tokenizer


def ensure_downloaded(cfg: ExperimentConfig) -> None:
    """Fetch the corpus splits the config names (of every corpus of data.corpora too) unless
    they are already on disk."""
    from nmt.data.prepare import splits_by_corpus

    d = cfg.data
    for corpus, splits in splits_by_corpus(d).items():
        base = corpus_dir(d.data_dir, corpus)
        missing = [
            s
            for s in splits
            if not all((base / f"{s}.{lang}").exists() for lang in (d.src_lang, d.tgt_lang))
        ]
        if missing:
            log(f"downloading {corpus} ({', '.join(missing)})")
            download(
                corpus,
                languages=[d.src_lang, d.tgt_lang],
                splits=missing,
                data_dir=d.data_dir,
                mirror=d.mirror,
            )


def init_from_tokenizer(cfg: ExperimentConfig) -> Tokenizer | None:
    """The SentencePiece models of the checkpoint a run starts from (`train.init_from`),
    which `prepare` reuses; None for a run from scratch."""
    if cfg.train.init_from is None:
        return None
    from nmt.checkpoint import read_model_checkpoint  # imported here: it loads torch

    return read_model_checkpoint(Path(cfg.train.init_from)).tokenizer


def check_scoring(cfg: ExperimentConfig, *, evaluate_at_end: bool) -> None:
    """Refuse a BLEU tokenizer that cannot be built (ja-mecab without its packages) before
    training, rather than at its first validation or after it."""
    if evaluate_at_end or cfg.train.valid_bleu:
        check_bleu_tokenizer(configured_bleu_tokenizer(cfg))


def check_extras(cfg: ExperimentConfig) -> None:
    """Refuse a setting whose optional extra is not installed before any stage runs (`nmt
    run` would otherwise download and prepare first)."""
    from nmt.extras import require_extra

    if cfg.train.tensorboard:
        require_extra("tensorboard", "train.tensorboard: true")


def check_decode_precision(cfg: ExperimentConfig, device: torch.device) -> None:
    """Refuse a decode.precision the test evaluation could not use on `device` (bf16 on a
    CPU) before training, rather than after it."""
    from nmt.runtime import choose_precision

    choose_precision(cfg.decode.precision, device, key="decode.precision")


def final_checkpoint(cfg: ExperimentConfig) -> Path:
    """The checkpoint to evaluate: the average of the last N, or best.pt (or last.pt)."""
    from nmt.checkpoint import save_checkpoint
    from nmt.training.checkpoints import average_checkpoints, last_step_checkpoints

    directory = cfg.run_path / "checkpoints"
    if cfg.train.average_last > 0:
        chosen = last_step_checkpoints(directory, cfg.train.average_last)
        if len(chosen) > 1:
            averaged = directory / "averaged.pt"
            save_checkpoint(averaged, average_checkpoints(chosen))
            log(f"averaged {len(chosen)} checkpoints into {averaged}")
            return averaged
    best = directory / "best.pt"
    return best if best.exists() else directory / "last.pt"


def prepare_command(cfg: ExperimentConfig, *, force: bool) -> None:
    """`nmt prepare`: clean, train SentencePiece, binarize; config.yaml is written unless
    checkpoints exist (then it stays what they ran)."""
    from nmt.data.prepare import existing_checkpoints, prepare
    from nmt.report import print_prepare_summary

    with run_lock(cfg.run_path, command=command_line()):
        result = prepare(cfg, force=force, reused=init_from_tokenizer(cfg))
        if result.orphaned_checkpoints:
            log(
                f"warning: replaced the prepared data of {cfg.run_path}: the run must restart; "
                f"its {len(result.orphaned_checkpoints)} checkpoints in "
                f"{result.orphaned_checkpoints[0].parent} can no longer be resumed (nmt train "
                "refuses them): delete them, or train in a fresh run directory"
            )
        if not existing_checkpoints(cfg):
            write_resolved_config(cfg)
    print_prepare_summary(result)


def train_command(cfg: ExperimentConfig, *, evaluate_at_end: bool) -> None:
    """`nmt train`: train (or resume), then score the test splits with the final checkpoint."""
    from nmt.runtime import peer_failures_reported, setup_runtime, teardown_runtime
    from nmt.training.trainer import Trainer

    t = cfg.train
    runtime = setup_runtime(device=t.device, precision=t.precision, threads=t.threads)
    try:
        check_scoring(cfg, evaluate_at_end=evaluate_at_end)
        if evaluate_at_end:  # refused now, not after training
            check_decode_precision(cfg, runtime.device)
        # One lock per run, taken by the process that writes it (rank 0 of a DDP run).
        with run_lock_if(runtime.is_main, cfg.run_path, command=command_line()):
            with peer_failures_reported(runtime):
                Trainer(cfg, runtime).fit()
            if evaluate_at_end and runtime.is_main:
                evaluate_test_splits(cfg, final_checkpoint(cfg), device=str(runtime.device))
    finally:
        teardown_runtime(runtime)


def run_command(cfg: ExperimentConfig) -> list[dict]:
    """`nmt run`: every stage, under one lock for the whole pipeline."""
    from nmt.data.prepare import existing_checkpoints, prepare
    from nmt.report import print_prepare_summary
    from nmt.runtime import peer_failures_reported, setup_runtime, teardown_runtime
    from nmt.training.trainer import Trainer

    check_scoring(cfg, evaluate_at_end=True)  # refused now, not after training
    check_extras(cfg)  # refused now, not after downloading and preparing
    with run_lock(cfg.run_path, command=command_line()):
        ensure_downloaded(cfg)
        print_prepare_summary(prepare(cfg, reused=init_from_tokenizer(cfg)))
        if not existing_checkpoints(cfg):  # else the trainer writes it once resume is checked
            write_resolved_config(cfg)
        t = cfg.train
        runtime = setup_runtime(device=t.device, precision=t.precision, threads=t.threads)
        try:
            check_decode_precision(cfg, runtime.device)  # refused now, not after training
            with peer_failures_reported(runtime):
                Trainer(cfg, runtime).fit()
            return evaluate_test_splits(cfg, final_checkpoint(cfg), device=str(runtime.device))
        finally:
            teardown_runtime(runtime)
