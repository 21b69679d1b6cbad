"""Validation during training: dev loss/perplexity and, optionally, sacreBLEU of decodes."""

from __future__ import annotations

import dataclasses
import math

import torch

from nmt.config import ExperimentConfig
from nmt.data.batching import collate, make_batches
from nmt.data.prepare import load_prepared, prepared_dir
from nmt.data.text import read_lines
from nmt.data.tokenizer import PAD_ID, Tokenizer
from nmt.evaluation.metrics import configured_bleu_tokenizer, score_lines
from nmt.model.transformer import Transformer
from nmt.runtime import Runtime
from nmt.training.loss import label_smoothed_loss


def validation_scores(
    model: Transformer, cfg: ExperimentConfig, tokenizer: Tokenizer, rt: Runtime
) -> dict:
    """{"loss", "nll", "ppl"} on the dev split, plus {"bleu"} when train.valid_bleu is set."""
    was_training = model.training
    model.eval()
    try:
        scores = dev_loss(model, cfg, rt)
        if cfg.train.valid_bleu:
            scores["bleu"] = dev_bleu(model, cfg, tokenizer, rt)
    finally:
        model.train(was_training)
    return scores


@torch.inference_mode()
def dev_loss(model: Transformer, cfg: ExperimentConfig, rt: Runtime) -> dict:
    src, tgt = load_prepared(cfg, cfg.data.valid_split)
    loss = nll = tokens = 0.0
    for indices in make_batches(src.lengths, tgt.lengths, max_tokens=cfg.train.max_tokens):
        batch = collate(src, tgt, indices).to(rt.device)
        with rt.autocast():
            logits = model(batch.src_ids, batch.tgt_in)
        sums = label_smoothed_loss(
            logits, batch.tgt_out, epsilon=cfg.train.label_smoothing, ignore_index=PAD_ID
        )
        loss += float(sums.loss)
        nll += float(sums.nll)
        tokens += batch.num_tgt_tokens
    return {"loss": loss / tokens, "nll": nll / tokens, "ppl": math.exp(min(nll / tokens, 50))}


def dev_bleu(model: Transformer, cfg: ExperimentConfig, tokenizer: Tokenizer, rt: Runtime) -> float:
    """sacreBLEU of the decoded dev split (or its first valid_bleu_max_sentences lines)
    against the cleaned dev references, with the tokenizer the test splits are scored with
    (eval.bleu_tokenize for data.tgt_lang)."""
    from nmt.decoding.engine import Engine

    src, _ = load_prepared(cfg, cfg.data.valid_split)
    refs = read_lines(prepared_dir(cfg) / f"{cfg.data.valid_split}.{cfg.data.tgt_lang}")
    n = cfg.train.valid_bleu_max_sentences or len(src)
    beam = cfg.train.valid_bleu_beam
    translator = Engine(
        model,
        tokenizer,
        decode=dataclasses.replace(cfg.decode, beam_size=beam, n_best=1),
        device=rt.device,
        amp_dtype=rt.amp_dtype,
        target_language=cfg.data.tgt_lang,
    )
    hyps = translator.translate_ids([src[i].tolist() for i in range(min(n, len(src)))]).best
    tokenize = configured_bleu_tokenizer(cfg)
    return score_lines(hyps, refs[: len(hyps)], tokenize=tokenize)["bleu"].score
