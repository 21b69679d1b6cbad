"""`nmt import huggingface DIR -o CHECKPOINT`: a local transformers seq2seq directory as an
nmt checkpoint that `translate`, `evaluate` and `train.init_from` read like any other.

Supported: the Marian layout (MarianMTModel, the OPUS-MT family, and nmt's own
`export --to huggingface` of a post-norm model) and its pre-norm twin as nmt exports it
(PegasusForConditionalGeneration with MarianTokenizer files), here; the M2M100 layout for one
language pair, in nmt.interop.m2m100. Not (yet): NLLB's tokenizer, Pegasus checkpoints with
their own PegasusTokenizer (google/pegasus-*: no source.spm, refused as missing files).

What the checkpoint holds: config (the architecture read from config.json, nmt's defaults
elsewhere), spm (the SentencePiece models rewritten to nmt's ids, nmt.interop.vocab), vocab,
fingerprint (data: None), model, and `imported` (where from, which class). No training state,
as a release checkpoint (`nmt export --to nmt`).

Marian conventions and how nmt represents them:
  * post-norm layers, no final LayerNorm (Pegasus: pre-norm, closed by LayerNorms),
    sinusoidal positions from 0 with sines first: model.norm=post (pre), and the width
    permutation of nmt.interop.layout (walked backwards).
  * activation swish (SiLU): model.activation=swish; gelu and relu map to themselves.
  * final_logits_bias: model.output_bias=true (left false when the bias is all zeros and no
    BOS row needs one, so an nmt export comes back exactly as it was).
  * vocab.json ids, EOS 0, PAD last, the decoder starting from PAD: nmt.interop.vocab
    permutes the rows into nmt's layout and rewrites the SentencePiece models to match.
  * scale_embedding must be true (nmt always scales by sqrt(D)); the same number of heads
    and the same feed-forward width in encoder and decoder. Anything else is refused.
Text: MarianTokenizer applies Moses punctuation normalisation when sacremoses is installed;
nmt applies NFC. Target-language tokens of multilingual OPUS-MT models (">>fra<<" at the
start of a line) are not recognised in nmt's input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nmt.errors import NmtError
from nmt.interop import seq2seq

COMMAND = "nmt import huggingface"
SUPPORTED = ("marian", "pegasus", "m2m_100")
TOKENIZER_FILES = {
    "marian": ("source.spm", "target.spm", "vocab.json"),
    "pegasus": ("source.spm", "target.spm", "vocab.json"),  # nmt's own pre-norm export
    "m2m_100": ("sentencepiece.bpe.model", "vocab.json"),
}


def import_command(
    directory: Path,
    out: Path,
    *,
    src_lang: str | None = None,
    tgt_lang: str | None = None,
    force: bool = False,
) -> str:
    """Convert `directory` into the checkpoint `out`; returns the summary line."""
    from nmt.checkpoint import check_model_schema, save_checkpoint
    from nmt.extras import require_extra

    directory, out = Path(directory), Path(out)
    model_type = read_model_type(directory)
    _check_out(out, force=force)
    require_extra("huggingface", COMMAND)
    missing = [n for n in TOKENIZER_FILES[model_type] if not (directory / n).is_file()]
    if missing:
        raise NmtError(f"{directory}: missing tokenizer file(s) {', '.join(missing)}")
    if model_type in ("marian", "pegasus"):
        state = marian_state(directory, src_lang=src_lang, tgt_lang=tgt_lang)
    else:
        from nmt.interop.m2m100 import m2m100_state

        state = m2m100_state(directory, src_lang=src_lang, tgt_lang=tgt_lang)
    check_model_schema(directory, state)  # every tensor finite, of the architecture's shape
    save_checkpoint(out, state)
    cfg = state["config"]
    return (
        f"imported {directory} ({model_type}, {cfg['data']['src_lang']} -> "
        f"{cfg['data']['tgt_lang']}) as {out}"
    )


def read_model_type(directory: Path) -> str:
    """config.json's model_type, refused unless it is one this import reads."""
    if not directory.is_dir():
        raise NmtError(f"{directory} is not a directory (give a transformers model directory)")
    config = _read_json(directory / "config.json")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED:
        raise NmtError(
            f"{directory / 'config.json'}: model_type {model_type!r} is not supported; "
            f"supported: {', '.join(SUPPORTED)}"
        )
    return model_type


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NmtError(f"{path} is missing (not a transformers model directory)") from None
    except (OSError, ValueError) as exc:
        raise NmtError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise NmtError(f"{path}: expected a JSON object")
    return data


def _check_out(out: Path, *, force: bool) -> None:
    if out.exists() and not force:
        raise NmtError(f"{out} exists; remove it or pass --force to replace it")
    if out.is_dir():
        raise NmtError(f"{out} is a directory; give the checkpoint file to write")
    if not out.parent.exists() and str(out.parent) not in ("", "."):
        raise NmtError(f"cannot write {out}: the directory {out.parent} does not exist")


# --------------------------------------------------------------------------- Marian


def marian_state(directory: Path, *, src_lang: str | None, tgt_lang: str | None) -> dict:
    """The checkpoint state of the Marian model in `directory` (see the module docstring)."""
    from nmt.config import config_from_dict

    hf = _load_marian(directory)
    pre_norm = hf.config.model_type == "pegasus"
    tokens = _tokenizer_settings(directory)
    src_order, tgt_order = marian_orders(directory, hf.config, tokens)
    spms = tuple(
        seq2seq.spm_in_nmt_order(directory / name, order.pieces)
        for name, order in (("source.spm", src_order), ("target.spm", tgt_order))
    )
    bias = hf.state_dict()["final_logits_bias"][0]
    output_bias = bool(bias.any()) or tgt_order.copied_bos or tgt_order.aliases > 0
    langs = _languages(tokens, src_lang=src_lang, tgt_lang=tgt_lang)
    raw = marian_config(directory, hf, output_bias=output_bias, langs=langs, pre_norm=pre_norm)
    cfg = config_from_dict(raw, source=str(directory / "config.json"))
    orders = (src_order, tgt_order)
    return seq2seq.imported_state(directory, hf, cfg, orders, spms)


def _load_marian(directory: Path):
    """MarianMTModel, or PegasusForConditionalGeneration (the same layout, pre-norm)."""
    from transformers import AutoConfig, MarianMTModel, PegasusForConditionalGeneration

    model_type = AutoConfig.from_pretrained(str(directory)).model_type
    cls = PegasusForConditionalGeneration if model_type == "pegasus" else MarianMTModel
    return seq2seq.load_transformers_model(cls, directory)


def _tokenizer_settings(directory: Path) -> dict[str, Any]:
    """tokenizer_config.json (optional) with MarianTokenizer's defaults."""
    path = directory / "tokenizer_config.json"
    settings = _read_json(path) if path.is_file() else {}
    out = {"unk_token": "<unk>", "eos_token": "</s>", "pad_token": "<pad>"}
    for key in out:
        value = settings.get(key)
        if isinstance(value, dict):  # an AddedToken written out
            value = value.get("content")
        if isinstance(value, str):
            out[key] = value
    out["separate_vocabs"] = bool(settings.get("separate_vocabs", False))
    out["source_lang"] = settings.get("source_lang")
    out["target_lang"] = settings.get("target_lang")
    return out


def marian_orders(directory: Path, config, tokens: dict[str, Any]):
    """(source, target) ImportOrder; one shared order when the embeddings are shared. Pieces
    of source.spm / target.spm that the vocabulary lacks become aliases of UNK (vocab.py)."""
    from nmt.interop.vocab import lost_pieces, with_aliases

    src, tgt = _marian_orders(directory, config, tokens)
    src_lost, tgt_lost = (
        lost_pieces((directory / name).read_bytes(), _names(order), where=str(directory / name))
        for name, order in (("source.spm", src), ("target.spm", tgt))
    )
    if src is tgt:  # one order for both sides: the aliases of both models
        shared = with_aliases(src, list(dict.fromkeys(src_lost + tgt_lost)))
        return shared, shared
    return with_aliases(src, src_lost), with_aliases(tgt, tgt_lost)


def _names(order) -> dict[str, int]:
    return {piece: i for i, piece in enumerate(order.pieces)}


def _marian_orders(directory: Path, config, tokens: dict[str, Any]):
    from nmt.interop.vocab import import_order

    shared = getattr(config, "share_encoder_decoder_embeddings", True)
    src_vocab = _read_vocab(directory / "vocab.json")
    tgt_file = directory / "target_vocab.json"
    if shared or not tokens["separate_vocabs"]:
        tgt_vocab, tgt_where = src_vocab, directory / "vocab.json"
    else:
        tgt_vocab, tgt_where = _read_vocab(tgt_file), tgt_file
    target = _order(tgt_vocab, tokens, config, where=tgt_where)
    if shared:
        return target, target
    where = directory / "vocab.json"
    pad = _special(src_vocab, tokens["pad_token"], where)
    # The encoder reads no BOS: the source side takes the piece the target starts from if
    # it has one (an nmt export's "<s>"), else a copy of PAD, never read.
    start = src_vocab.get(target.pieces[2], pad)
    source = import_order(
        src_vocab,
        pad=pad,
        unk=_special(src_vocab, tokens["unk_token"], where),
        eos=_special(src_vocab, tokens["eos_token"], where),
        start=start,
        where=str(where),
    )
    return source, target


def _order(vocab: dict[str, int], tokens: dict[str, Any], config, *, where: Path):
    from nmt.interop.vocab import import_order

    pad = _special(vocab, tokens["pad_token"], where)
    eos = _special(vocab, tokens["eos_token"], where)
    start = config.decoder_start_token_id
    start = pad if start is None else start
    found_pad = pad
    if start == pad and vocab.get("<pad>", start) != start:
        # nmt's Pegasus export: the tokenizer pads with the start token "<s>" (for
        # CTranslate2), while "<pad>" is a row of its own: it stays nmt's PAD.
        pad = vocab["<pad>"]
    for name, found, wanted in (
        ("pad_token_id", found_pad, config.pad_token_id),
        ("eos_token_id", eos, config.eos_token_id),
    ):
        if wanted is not None and found != wanted:
            raise NmtError(
                f"{where}: the tokenizer's {name[:-9]} token has id {found}, config.json's "
                f"{name} is {wanted}"
            )
    unk = _special(vocab, tokens["unk_token"], where)
    return import_order(vocab, pad=pad, unk=unk, eos=eos, start=start, where=str(where))


def _read_vocab(path: Path) -> dict[str, int]:
    vocab = _read_json(path)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in vocab.values()):
        raise NmtError(f"{path}: expected an object of piece -> integer id")
    return vocab


def _special(vocab: dict[str, int], piece: str, where: Path) -> int:
    if piece not in vocab:
        raise NmtError(f"{where}: the special token {piece!r} is not in the vocabulary")
    return vocab[piece]


def _languages(tokens: dict[str, Any], *, src_lang: str | None, tgt_lang: str | None):
    """(source, target) language names: the options, else tokenizer_config.json's, else
    src / tgt."""
    src = src_lang or tokens.get("source_lang") or "src"
    tgt = tgt_lang or tokens.get("target_lang") or "tgt"
    return str(src), str(tgt)


def marian_config(
    directory: Path, hf, *, output_bias: bool, langs: tuple[str, str], pre_norm: bool
) -> dict:
    """The nmt config (as a dict for `config_from_dict`) of a Marian model; refuses, naming
    the config.json key, what nmt's Transformer cannot compute."""
    shared = bool(getattr(hf.config, "share_encoder_decoder_embeddings", True))
    return seq2seq.nmt_config(
        directory,
        hf,
        langs=langs,
        shared=shared,
        pre_norm=pre_norm,
        reserved_positions=2,  # BOS-or-start and EOS
        model={"output_bias": output_bias},
    )
