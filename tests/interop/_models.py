"""Random-weight nmt checkpoints of every architecture variant, over a real SentencePiece
model trained on Multi30k, and the real Multi30k sentences to translate.

Random weights are what an equality test needs (every tensor matters, nothing is learned to
hide a mistake), with one nudge: a random model almost never emits EOS (or, pushed towards it
by a constant, emits it at once), so its searches would run to their length limit, where
CTranslate2 and transformers cut a hypothesis and nmt forces EOS (see nmt.interop.ctranslate2).
`_end_sentences_sooner` makes EOS more likely the longer a hypothesis gets, so that every
search ends on its own after 9 to 21 tokens (its sentence, model and search decide where),
well before the limit of DECODE (source length + 20): the equivalence tests compare whole
searches, never a cut one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nmt.config import DecodeConfig, ExperimentConfig, ModelConfig, config_to_dict
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from nmt.model.transformer import Transformer

SENTENCES = 200
VOCAB = 600
# A limit no search of these models reaches (test_equivalence checks it).
DECODE = DecodeConfig(max_input_tokens=200, max_len_a=1.0, max_len_b=20)
# The position channel of `_end_sentences_sooner`: PE's sine and cosine of frequency
# 10000^(-10/32) ~ 1/18 (d_model 32), whose difference rises from -1 at position 0 to +1 at 28.
CHANNEL = [10, 11]


@dataclass(frozen=True)
class Variant:
    norm: str
    joint: bool  # one SentencePiece model (and share_embeddings) or one per language
    tie: bool
    activation: str

    @property
    def name(self) -> str:
        return "-".join(
            [
                self.norm,
                "shared" if self.joint else "separate",
                "tied" if self.tie else "untied",
                self.activation,
            ]
        )


VARIANTS = [
    Variant(norm, joint, tie, act)
    for norm in ("pre", "post")
    for joint in (True, False)
    for tie in (True, False)
    for act in ("relu", "gelu")
]


def lines(shared_data: Path, lang: str, n: int, *, split: str = "train") -> list[str]:
    with open(shared_data / "multi30k" / f"{split}.{lang}", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def make_checkpoint(
    path: Path, variant: Variant, spm_models: dict[str, bytes], *, seed: int = 1
) -> Path:
    """A random-weight checkpoint of `variant` with the trainer's keys (training state
    included, so that a release export has something to strip)."""
    from nmt.checkpoint import bytes_to_tensor, save_checkpoint, tokenizer_fingerprint

    model_cfg = ModelConfig(
        d_model=32,
        heads=4,
        encoder_layers=2,
        decoder_layers=2,
        ffn_dim=64,
        activation=variant.activation,
        norm=variant.norm,
        share_embeddings=variant.joint,
        tie_output=variant.tie,
        max_positions=256,
    )
    cfg = ExperimentConfig(
        name=f"random-{variant.name}",
        model=model_cfg,
        decode=DECODE,
    )
    cfg = _with_data(cfg, joint=variant.joint)
    src, tgt = (
        (spm_models["joint"], spm_models["joint"])
        if variant.joint
        else (spm_models["de"], spm_models["en"])
    )
    tokenizer = Tokenizer(src, None if variant.joint else tgt)
    torch.manual_seed(seed)
    model = Transformer(
        model_cfg,
        src_vocab_size=tokenizer.src_vocab_size,
        tgt_vocab_size=tokenizer.tgt_vocab_size,
        pad_id=PAD_ID,
    )
    _end_sentences_sooner(model, variant)
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(
        path,
        {
            "config": config_to_dict(cfg),
            "spm": {"src": bytes_to_tensor(src), "tgt": bytes_to_tensor(tgt)},
            "vocab": {
                "src": tokenizer.src_vocab_size,
                "tgt": tokenizer.tgt_vocab_size,
                "joint": tokenizer.joint,
            },
            "fingerprint": {"tokenizer": tokenizer_fingerprint(src, tgt), "data": None},
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "train_state": {"step": 7, "best_score": 1.5},
            "rng": {"torch": torch.get_rng_state()},
        },
    )
    return path


def _with_data(cfg: ExperimentConfig, *, joint: bool) -> ExperimentConfig:
    from dataclasses import replace

    data = replace(cfg.data, corpus="multi30k", src_lang="de", tgt_lang="en", joint_vocab=joint)
    return replace(cfg, data=data)


@torch.no_grad()
def _end_sentences_sooner(model, variant: Variant) -> None:
    """See the module docstring. Two changes to the random weights:

    * A position channel. The target embeddings (and, tied, the output rows) are zero on
      CHANNEL, and no decoder sub-layer writes there (zero rows of the attention outputs and
      of fc2), so the decoder's residual stream carries PE's sine and cosine there (pre-norm:
      exactly; post-norm: rescaled by each LayerNorm). EOS alone reads it, +25 * (sin - cos)
      through the last LayerNorm: its logit rises by about 1 nat per position (post-norm:
      0.6) up to position 28.
    * Constant shifts along the all-ones direction: a LayerNorm's normalised output (gain 1,
      as initialised) has zero mean, so it is orthogonal to it, and the shifts are exact, the
      same at every step: EOS +4 nats, PAD and BOS -20 (never generated, so CTranslate2's
      masking before its softmax changes nothing).
    """
    model.tgt_embed.tokens.weight[:, CHANNEL] = 0
    model.output.weight[:, CHANNEL] = 0
    for layer in model.decoder_layers:
        for linear in (layer.self_attn.out, layer.cross_attn.out, layer.ffn.fc2):
            linear.weight[CHANNEL] = 0
            linear.bias[CHANNEL] = 0
    direction = torch.full((model.cfg.d_model,), model.cfg.d_model**-0.5)
    last = (
        model.decoder_norm if variant.norm == "pre" else model.decoder_layers[-1].ffn_residual.norm
    )
    last.bias += 4.0 * direction
    model.output.weight[EOS_ID] += 1.0 * direction
    model.output.weight[PAD_ID] -= 5.0 * direction
    model.output.weight[BOS_ID] -= 5.0 * direction
    model.output.weight[EOS_ID, CHANNEL] += torch.tensor([25.0, -25.0])
