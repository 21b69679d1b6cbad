"""Random-weight transformers Marian directories in the OPUS-MT conventions, over real
SentencePiece models trained on Multi30k: vocab.json with ids of its own (EOS 0, UNK 1, the
pieces, PAD last, so no id is SentencePiece's), the decoder starting from PAD, swish, a
random final_logits_bias; and M2M100 directories (language tokens, fairseq positions).

As in _models.py, the random weights get one nudge so that every search ends on its own,
well before the length limit (where generate() cuts a hypothesis and nmt ends it with EOS:
a different rule, not a different model, so the import tests compare only whole searches):
EOS's logit rises with the decoder position (`_eos_rises_with_position`, through a channel
of the sinusoid table that nothing else writes), from a constant start (Marian: EOS's
final_logits_bias; M2M100, which has none: a push along the all-ones direction). Searches
then end after 11 to 21 tokens on the first 100 Multi30k test sentences (greedy and beam 5),
never at the tests' limit of 40; the tests check that premise.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
import torch

# Where EOS's logit starts (Marian: its final_logits_bias; M2M100: its row += PUSH x the
# all-ones direction, which the final LayerNorm's bias also gets) and how fast it rises with
# position (`_eos_rises_with_position`). Chosen by measurement: searches end after 11 to 21
# tokens; a weaker rise lets some greedy searches of the shared-vocabulary model run to 39.
# The width and depth of every random transformers model built here (Marian and M2M100 alike).
TINY_SIZES = dict(
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
)
EOS_BIAS = 2.0
EOS_SLOPE = 40.0
M2M_EOS_PUSH = 0.3
M2M_EOS_SLOPE = 25.0


@dataclass(frozen=True)
class Opus:
    shared: bool  # one vocab.json (union of both sides' pieces) and shared embeddings
    tie: bool
    activation: str = "swish"
    # SentencePiece pieces left out of the vocabulary (MarianTokenizer reads them as <unk>)
    missing: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        vocab = "shared" if self.shared else "separate"
        return f"{vocab}-{'tied' if self.tie else 'untied'}" + ("-missing" if self.missing else "")


def _pieces(blob: bytes) -> list[str]:
    """The pieces encoding can produce, in SentencePiece order (control pieces left out)."""
    p = spm.SentencePieceProcessor()
    p.LoadFromSerializedProto(blob)
    return [
        p.id_to_piece(i)
        for i in range(p.get_piece_size())
        if not (p.is_control(i) or p.is_unknown(i))
    ]


def _opus_vocab(pieces: list[str], missing: tuple[str, ...] = (), size: int = 0):
    """OPUS-MT's layout: </s> 0, <unk> 1, the pieces (but `missing`), fillers up to `size`
    entries (MarianMTModel wants PAD's id the same on both sides), <pad> last."""
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in dict.fromkeys(p for p in pieces if p not in missing):
        vocab[piece] = len(vocab)
    while len(vocab) < size - 1:
        vocab[f"<filler{len(vocab)}>"] = len(vocab)
    vocab["<pad>"] = len(vocab)
    return vocab


def make_marian_dir(out: Path, variant: Opus, spm_models: dict[str, bytes], *, seed: int = 0):
    """Write a MarianMTModel + MarianTokenizer directory (save_pretrained) into `out`."""
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    out.mkdir(parents=True, exist_ok=True)
    de, en = spm_models["de"], spm_models["en"]
    (out / "source.spm").write_bytes(de)
    (out / "target.spm").write_bytes(en)
    missing = variant.missing
    if variant.shared:
        src_vocab = tgt_vocab = _opus_vocab(_pieces(de) + _pieces(en), missing)
    else:
        size = max(len(_pieces(de)), len(_pieces(en))) + 3
        src_vocab = _opus_vocab(_pieces(de), missing, size)
        tgt_vocab = _opus_vocab(_pieces(en), missing, size)
        (out / "target_vocab.json").write_text(json.dumps(tgt_vocab, ensure_ascii=False))
    (out / "vocab.json").write_text(json.dumps(src_vocab, ensure_ascii=False))
    tokenizer = MarianTokenizer(
        source_spm=str(out / "source.spm"),
        target_spm=str(out / "target.spm"),
        vocab=str(out / "vocab.json"),
        target_vocab_file=None if variant.shared else str(out / "target_vocab.json"),
        separate_vocabs=not variant.shared,
        source_lang="de",
        target_lang="en",
    )
    tokenizer.save_pretrained(out)
    pad = len(tgt_vocab) - 1
    config = MarianConfig(
        vocab_size=len(src_vocab),
        decoder_vocab_size=len(tgt_vocab),
        share_encoder_decoder_embeddings=variant.shared,
        tie_word_embeddings=variant.tie,
        **TINY_SIZES,
        activation_function=variant.activation,
        pad_token_id=pad,
        eos_token_id=0,
        decoder_start_token_id=pad,
        forced_eos_token_id=None,
        max_position_embeddings=256,
        scale_embedding=True,
    )
    torch.manual_seed(seed)
    model = MarianMTModel(config).eval()
    _randomize(model)
    model.save_pretrained(out)
    return out


@torch.no_grad()
def _randomize(model) -> None:
    """Weights of the scale a trained model has (transformers initialises with std 0.02,
    which makes every distribution nearly flat): matrices ~ normal(0, D^-0.5), LayerNorm
    gains near 1, biases and final_logits_bias random; then EOS made to rise with position
    (module docstring)."""
    d = model.config.d_model
    for name, p in model.named_parameters():
        if "embed_positions" in name:  # the sinusoids (not saved: from_pretrained makes them)
            continue
        if "layer_norm" in name:
            p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
        elif p.dim() == 2:
            p.normal_(0.0, d**-0.5)
        else:
            p.normal_(0.0, 0.1)
    model.final_logits_bias.normal_(0.0, 0.5)
    model.final_logits_bias[0, model.config.eos_token_id] = EOS_BIAS
    table = model.model.decoder.embed_positions.weight
    _eos_rises_with_position(model, table, slope=EOS_SLOPE)


@torch.no_grad()
def _eos_rises_with_position(model, table: torch.Tensor, *, slope: float) -> None:
    """EOS's logit made to grow with the decoder position, as _models._end_sentences_sooner
    does for nmt's models, here in transformers' layout: `table` [positions, D] is the
    decoder's sinusoid table (row p: position p; sines in the first half, cosines in the
    second). Its sine and cosine of frequency ~1/18 (`_position_channel`) become a channel
    that only the position table writes: every token embedding and output row is zero there
    (shared or tied ones too: the encoder's input loses two random dimensions, nothing else),
    so are the rows of every decoder sub-layer's output projection (attention out_proj, fc2),
    and every decoder LayerNorm has gain 1 and bias 0 there. The decoder's residual stream
    then carries sin - cos there (pre-norm: exactly; post-norm: rescaled by each LayerNorm),
    and EOS's output row alone reads it, +slope * (sin - cos): its logit rises with position
    (sin - cos goes from -1 at position 0 to +1 at about 28), the rest of the model random.
    (M2M100's decoder starts from </s>, whose tied embedding is EOS's output row: position 0
    carries that row too, which later positions read only through attention, not on the
    channel.)"""
    sine, cosine = _position_channel(table)
    channel = [sine, cosine]
    decoder = model.model.decoder
    decoder.embed_tokens.weight[:, channel] = 0
    output = model.get_output_embeddings().weight
    output[:, channel] = 0
    for layer in decoder.layers:
        for linear in (layer.self_attn.out_proj, layer.encoder_attn.out_proj, layer.fc2):
            linear.weight[channel] = 0
            linear.bias[channel] = 0
    for norm in decoder.modules():
        if isinstance(norm, torch.nn.LayerNorm):
            norm.weight[channel] = 1
            norm.bias[channel] = 0
    output[model.config.eos_token_id, channel] = torch.tensor([slope, -slope])


def _position_channel(table: torch.Tensor, frequency: float = 1 / 18) -> tuple[int, int]:
    """The columns (sine, cosine) of the sinusoid table whose frequency is closest to
    `frequency`, read off the table itself (the phase step from its row 0 to row 1) and
    checked over every row, so that a change of layout in transformers fails here rather
    than as outputs that run to the length limit."""
    half = table.shape[1] // 2
    phases = torch.atan2(table[:2, :half], table[:2, half:]).double()  # [2, half]
    steps = (phases[1] - phases[0]) % (2 * math.pi)
    sine = int((steps - frequency).abs().argmin())
    angles = phases[0, sine] + torch.arange(len(table), dtype=torch.float64) * steps[sine]
    assert torch.allclose(table[:, sine].double(), angles.sin(), atol=1e-4)
    assert torch.allclose(table[:, half + sine].double(), angles.cos(), atol=1e-4)
    return sine, half + sine


# --------------------------------------------------------------------------- M2M100


def make_m2m100_dir(out: Path, spm_models: dict[str, bytes], *, seed: int = 0) -> Path:
    """A random-weight M2M100ForConditionalGeneration + M2M100Tokenizer directory over the
    joint Multi30k SentencePiece model, in fairseq's layout (<s> 0, <pad> 1, </s> 2, <unk> 3,
    the pieces, then 100 language tokens and 8 filler words)."""
    from transformers import M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    (out / "sentencepiece.bpe.model").write_bytes(spm_models["joint"])
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for piece in _pieces(spm_models["joint"]):
        vocab.setdefault(piece, len(vocab))
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = M2M100Tokenizer(
        vocab_file=str(out / "vocab.json"),
        spm_file=str(out / "sentencepiece.bpe.model"),
        src_lang="de",
        tgt_lang="en",
    )
    tokenizer.save_pretrained(out)
    config = M2M100Config(
        # the pieces, the language tokens, 8 filler words (len(tokenizer) counts the pieces)
        vocab_size=max(tokenizer.lang_token_to_id.values()) + 1 + 8,
        **TINY_SIZES,
        activation_function="relu",
        max_position_embeddings=256,
        scale_embedding=True,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=None,
    )
    torch.manual_seed(seed)
    model = M2M100ForConditionalGeneration(config).eval()
    with torch.no_grad():
        d = config.d_model
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            elif p.dim() == 2:
                p.normal_(0.0, d**-0.5)
            else:
                p.normal_(0.0, 0.1)
        # EOS likely after a few tokens (M2M100 has no final_logits_bias): the all-ones
        # direction through the last LayerNorm's bias and EOS's (tied) embedding row.
        direction = torch.full((d,), d**-0.5)
        model.model.decoder.layer_norm.bias += 4.0 * direction
        model.model.shared.weight[config.eos_token_id] += M2M_EOS_PUSH * direction
        # the table's rows from padding_idx + 1 on are positions 0, 1, ...
        table = model.model.decoder.embed_positions.weights[config.pad_token_id + 1 :]
        _eos_rises_with_position(model, table, slope=M2M_EOS_SLOPE)
    model.save_pretrained(out)
    return out
