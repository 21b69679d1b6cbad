"""What the imports of transformers encoder-decoders share (the BART family: Marian and
Pegasus in nmt.interop.importer, M2M100 in nmt.interop.m2m100): loading the model, its
config.json as an nmt config, its SentencePiece model and weights in nmt's ids and layout,
and nmt's Transformer holding them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from nmt.errors import NmtError

ACTIVATIONS = {"swish": "swish", "silu": "swish", "relu": "relu", "gelu": "gelu"}


def load_transformers_model(cls, directory: Path):
    """`cls.from_pretrained(directory)` in float32 and eval mode; a failure is one line."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no bar for a local load into one line
    try:
        model = cls.from_pretrained(str(directory), dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as exc:
        raise NmtError(f"{directory}: transformers cannot load the model ({exc})") from None
    return model.eval()


def spm_in_nmt_order(path: Path, pieces: list[str]) -> bytes:
    """The SentencePiece model at `path` with piece i = pieces[i] (nmt.interop.vocab)."""
    from nmt.interop.vocab import reordered_spm, spm_ids_match

    blob = path.read_bytes()
    try:
        if not spm_ids_match(blob, pieces):
            blob = reordered_spm(blob, pieces, where=str(path))
    except NmtError:
        raise
    except Exception as exc:  # sentencepiece's RuntimeError, protobuf's DecodeError
        raise NmtError(f"{path}: not a SentencePiece model ({exc})") from None
    return blob


def nmt_config(
    directory: Path,
    hf,
    *,
    langs: tuple[str, str],
    shared: bool,
    pre_norm: bool,
    reserved_positions: int,
    model: dict[str, Any],
) -> dict:
    """The nmt config (a dict for `config_from_dict`) of a transformers encoder-decoder of the
    BART family (Marian, Pegasus, M2M100: the same config.json keys), with the layout's own
    `model` keys added; refuses, naming the config.json key, what nmt's Transformer cannot
    compute. `reserved_positions`: decoder positions the layout's special tokens take."""
    c = hf.config
    refusals = []
    if not c.scale_embedding:
        refusals.append("scale_embedding is false (nmt always scales embeddings by sqrt(D))")
    if c.encoder_attention_heads != c.decoder_attention_heads:
        refusals.append("encoder_attention_heads != decoder_attention_heads")
    if c.encoder_ffn_dim != c.decoder_ffn_dim:
        refusals.append("encoder_ffn_dim != decoder_ffn_dim")
    if c.activation_function not in ACTIVATIONS:
        refusals.append(
            f"activation_function {c.activation_function!r} (allowed: {', '.join(ACTIVATIONS)})"
        )
    if refusals:
        raise NmtError(f"{directory / 'config.json'}: nmt cannot represent " + "; ".join(refusals))
    max_positions = c.max_position_embeddings
    name = re.sub(r"[^A-Za-z0-9._-]", "-", directory.resolve().name).lstrip("._-")[:64]
    beams = getattr(hf.generation_config, "num_beams", None) or 5
    return {
        "name": name or "imported",
        "data": {
            "src_lang": langs[0],
            "tgt_lang": langs[1],
            "joint_vocab": shared,
            "vocab_size": c.vocab_size,
            "max_tokens_per_sentence": min(250, max_positions - reserved_positions),
        },
        "model": {
            "d_model": c.d_model,
            "heads": c.encoder_attention_heads,
            "encoder_layers": c.encoder_layers,
            "decoder_layers": c.decoder_layers,
            "ffn_dim": c.encoder_ffn_dim,
            "dropout": c.dropout,
            "attention_dropout": c.attention_dropout,
            "activation_dropout": c.activation_dropout,
            "activation": ACTIVATIONS[c.activation_function],
            "norm": "pre" if pre_norm else "post",
            "share_embeddings": shared,
            "tie_output": bool(getattr(c, "tie_word_embeddings", True)),
            "max_positions": max_positions,
            **model,
        },
        "decode": {
            "beam_size": beams,
            "max_input_tokens": min(1000, max_positions - reserved_positions),
        },
    }


def nmt_weights(hf_state, model_cfg, src_order, tgt_order) -> dict:
    """nmt tensors from transformers ones: names and width layout by nmt.interop.layout, then
    the vocabulary rows put in nmt's order (nmt.interop.vocab); the output bias from
    final_logits_bias (zeros where the model has none, as M2M100)."""
    from nmt.interop.layout import from_transformers
    from nmt.interop.vocab import BOS_MARGIN

    if "lm_head.weight" not in hf_state:  # tied and not saved under its own name
        hf_state["lm_head.weight"] = hf_state["model.decoder.embed_tokens.weight"]
    weights = from_transformers(hf_state, cfg=model_cfg)
    src_rows, tgt_rows = torch.tensor(src_order.rows), torch.tensor(tgt_order.rows)
    weights["src_embed.tokens.weight"] = weights["src_embed.tokens.weight"][src_rows]
    weights["tgt_embed.tokens.weight"] = weights["tgt_embed.tokens.weight"][tgt_rows]
    weights["output.weight"] = weights["output.weight"][tgt_rows]
    if model_cfg.output_bias:
        hf_bias = hf_state.get("final_logits_bias", torch.zeros(1, len(tgt_order.rows)))[0]
        bias = hf_bias[tgt_rows].clone()
        if tgt_order.copied_bos:  # a copy of the start row, kept out of the softmax (vocab.py)
            from nmt.data.tokenizer import BOS_ID

            bias[BOS_ID] -= BOS_MARGIN
        if tgt_order.aliases:  # copies of UNK's row, the same
            bias[-tgt_order.aliases :] -= BOS_MARGIN
        weights["output.bias"] = bias
    return weights


def imported_state(directory: Path, hf, cfg, orders: tuple, spms: tuple[bytes, bytes]) -> dict:
    """The checkpoint state of the transformers model `hf` (read from `directory`) as nmt's
    Transformer of `cfg`; `orders`: its (source, target) ImportOrder, `spms`: the source and
    target SentencePiece models with nmt's ids. No training state, as a release checkpoint."""
    from nmt.checkpoint import bytes_to_tensor, tokenizer_fingerprint
    from nmt.config import config_to_dict
    from nmt.data.tokenizer import PAD_ID
    from nmt.model.transformer import Transformer

    (src_order, tgt_order), (src_spm, tgt_spm) = orders, spms
    src_size, tgt_size = len(src_order.rows), len(tgt_order.rows)
    hf_state = {k: v.detach().float() for k, v in hf.state_dict().items()}
    weights = nmt_weights(hf_state, cfg.model, src_order, tgt_order)
    model = Transformer(cfg.model, src_vocab_size=src_size, tgt_vocab_size=tgt_size, pad_id=PAD_ID)
    model.load_state_dict(weights, strict=True)  # every tensor of nmt's model must be set
    return {
        "config": config_to_dict(cfg),
        "spm": {"src": bytes_to_tensor(src_spm), "tgt": bytes_to_tensor(tgt_spm)},
        "vocab": {"src": src_size, "tgt": tgt_size, "joint": src_spm == tgt_spm},
        "fingerprint": {"tokenizer": tokenizer_fingerprint(src_spm, tgt_spm), "data": None},
        "model": model.eval().state_dict(),
        "imported": {"from": str(directory.resolve()), "model_type": hf.config.model_type},
    }
