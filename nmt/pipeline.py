"""Stages chained: download if missing -> prepare -> train -> average -> evaluate test splits.

Used by `nmt run` (everything) and at the end of `nmt train` (test-set evaluation).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nmt.config import ExperimentConfig
from nmt.data.download import corpus_dir, download
from nmt.data.text import read_lines, write_lines_atomic
from nmt.errors import DataError
from nmt.evaluation import (
    Score,
    check_bleu_tokenizer,
    configured_bleu_tokenizer,
    decoding_description,
    load_for_evaluation,
    record_results,
    result_tag,
    score_lines,
)

if TYPE_CHECKING:
    import torch

    from nmt.data.tokenizer import Tokenizer


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


@dataclass(frozen=True)
class SplitResult:
    split: str
    scores: dict[str, Score]
    lowercase: dict[str, Score]
    hypotheses: Path
    sentences_per_s: float

    def as_dict(self) -> dict:
        return {
            "split": self.split,
            "cased": {k: v.as_dict() for k, v in self.scores.items()},
            "lowercased": {k: v.as_dict() for k, v in self.lowercase.items()},
            "hypotheses": str(self.hypotheses),
            "sentences_per_s": self.sentences_per_s,
        }


def evaluate_split(
    translator, cfg: ExperimentConfig, split: str, out_dir: Path, *, tag: str
) -> SplitResult:
    """Translate the raw source of a corpus split and score it against the raw reference;
    the hypotheses go to `<split>.<tag>.hyp.<lang>` (see evaluation.result_tag)."""
    d = cfg.data
    base = corpus_dir(d.data_dir, d.corpus)
    src_path, ref_path = base / f"{split}.{d.src_lang}", base / f"{split}.{d.tgt_lang}"
    for path in (src_path, ref_path):
        if not path.exists():
            raise DataError(f"{path} not found; run `nmt download {d.corpus}`")
    sources, refs = read_lines(src_path), read_lines(ref_path)
    translation = translator.translate(sources)
    hyps = translation.best
    hyp_path = out_dir / f"{split}.{tag}.hyp.{d.tgt_lang}"
    write_lines_atomic(hyp_path, hyps)
    speed = translation.stats.sentences / max(translation.stats.seconds, 1e-9)
    tok = configured_bleu_tokenizer(cfg)
    cased = score_lines(hyps, refs, tokenize=tok)
    return SplitResult(
        split, cased, score_lines(hyps, refs, lowercase=True, tokenize=tok), hyp_path, speed
    )


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


def evaluate_test_splits(
    cfg: ExperimentConfig, checkpoint: Path, *, device: str = "cpu"
) -> list[SplitResult]:
    """Evaluate `checkpoint` on every `data.test_splits`; merges the results, each with the
    checkpoint's identity (resolved path, step, sha256), into eval/results.json."""
    if not cfg.data.test_splits:
        return []
    translator, identity = load_for_evaluation(checkpoint, device=device)
    out_dir = cfg.run_path / "eval"
    tag = result_tag(identity, translator)
    results = [
        evaluate_split(translator, cfg, split, out_dir, tag=tag) for split in cfg.data.test_splits
    ]
    provenance = {"checkpoint": identity.as_dict(), **decoding_description(translator)}
    record_results(out_dir, [r.as_dict() | provenance for r in results])
    for r in results:
        log(f"{r.split}: {r.scores['bleu'].text}")
        log(
            f"{r.split}: lowercased BLEU {r.lowercase['bleu'].score:.2f}, "
            f"chrF {r.scores['chrf'].score:.2f}, TER {r.scores['ter'].score:.2f}"
        )
    return results


def final_checkpoint(cfg: ExperimentConfig) -> Path:
    """The checkpoint to evaluate: the average of the last N, or best.pt (or last.pt)."""
    from nmt.checkpoint import save_checkpoint
    from nmt.training.checkpoints import CheckpointManager, average_checkpoints

    directory = cfg.run_path / "checkpoints"
    if cfg.train.average_last > 0:
        steps = CheckpointManager(directory, keep_last=cfg.train.keep_last).step_checkpoints()
        chosen = steps[-cfg.train.average_last :]
        if len(chosen) > 1:
            averaged = directory / "averaged.pt"
            save_checkpoint(averaged, average_checkpoints(chosen))
            log(f"averaged {len(chosen)} checkpoints into {averaged}")
            return averaged
    best = directory / "best.pt"
    return best if best.exists() else directory / "last.pt"
