"""`nmt import huggingface` of an M2M100 directory (M2M100ForConditionalGeneration with
M2M100Tokenizer: sentencepiece.bpe.model + vocab.json), for one language pair.

M2M100 conventions and how nmt represents them:
  * pre-norm layers closed by encoder.layer_norm / decoder.layer_norm: model.norm=pre.
  * fairseq's sinusoids, frequencies 1 / 10000^(i / (D/2 - 1)), sines first: model.positions
    =fairseq (nmt's interleaved layout; the width permutation of nmt.interop.layout maps it
    onto M2M100's halves), counted from padding_idx + 1: model.position_offset=pad id + 1.
    (Positions are counted per token, so this holds for right-padded rows, nmt's only kind.)
  * the source is [__src__] + pieces + [</s>]: model.source_prefix_id = __src__'s nmt id,
    which the encoder puts first; nmt's data pipeline adds EOS as for any model.
  * the decoder reads </s>, then the forced __tgt__, then the translation: nmt's BOS is a copy
    of </s>'s row (nmt.interop.vocab; kept out of the softmax by the output bias) and
    model.target_prefix_id = __tgt__'s nmt id, which the decoder reads right after BOS.
  * the fairseq dictionary (<s> 0, <pad> 1, </s> 2, <unk> 3, the pieces of vocab.json, the
    language tokens, the "madeupword" fillers) is put into nmt's layout like Marian's; rows
    the tokenizer has no name for become UNUSED pieces (still in the softmax, as in M2M100).
The other languages' tokens stay in the vocabulary (and in the softmax): the imported model
computes exactly M2M100's distribution for this pair. NLLB's tokenizer (NllbTokenizer, a
tokenizers JSON) is refused: not read yet.
"""

from __future__ import annotations

from pathlib import Path

from nmt.errors import NmtError
from nmt.interop import seq2seq

SPM_FILE = "sentencepiece.bpe.model"


def m2m100_state(directory: Path, *, src_lang: str | None, tgt_lang: str | None) -> dict:
    """The checkpoint state of the M2M100 model in `directory` for src_lang -> tgt_lang."""
    from transformers import M2M100ForConditionalGeneration

    from nmt.config import config_from_dict
    from nmt.interop.vocab import import_order, lost_pieces, with_aliases

    if not src_lang or not tgt_lang:
        raise NmtError(
            f"{directory}: an M2M100 model translates between many languages; choose the "
            "pair with --src-lang and --tgt-lang (e.g. --src-lang de --tgt-lang en)"
        )
    tokenizer = _tokenizer(directory)
    hf = seq2seq.load_transformers_model(M2M100ForConditionalGeneration, directory)
    vocab = _full_vocab(tokenizer, hf.config.vocab_size, directory)
    order = import_order(
        vocab,
        pad=tokenizer.pad_token_id,
        unk=tokenizer.unk_token_id,
        eos=tokenizer.eos_token_id,
        start=hf.config.decoder_start_token_id,
        where=str(directory / "vocab.json"),
    )
    spm_path = directory / SPM_FILE
    lost = lost_pieces(spm_path.read_bytes(), vocab, where=str(spm_path))
    order = with_aliases(order, lost)
    prefixes = [_language_id(vocab, lang, order.rows, option) for lang, option in
                ((src_lang, "--src-lang"), (tgt_lang, "--tgt-lang"))]  # fmt: skip
    blob = seq2seq.spm_in_nmt_order(directory / SPM_FILE, order.pieces)
    raw = m2m100_config(directory, hf, langs=(src_lang, tgt_lang), prefixes=prefixes)
    cfg = config_from_dict(raw, source=str(directory / "config.json"))
    orders, spms = (order, order), (blob, blob)
    return seq2seq.imported_state(directory, hf, cfg, orders, spms)


def _tokenizer(directory: Path):
    from transformers import AutoTokenizer, M2M100Tokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, RuntimeError) as exc:
        raise NmtError(f"{directory}: transformers cannot load the tokenizer ({exc})") from None
    if not isinstance(tokenizer, M2M100Tokenizer):
        raise NmtError(
            f"{directory}: tokenizer {type(tokenizer).__name__} is not read (yet); supported: "
            f"M2M100Tokenizer ({SPM_FILE} + vocab.json)"
        )
    return tokenizer


def _full_vocab(tokenizer, rows: int, directory: Path) -> dict[str, int]:
    """piece -> id for every embedding row; rows without a name get a placeholder."""
    # get_vocab() leaves out the language tokens (added tokens): lang_token_to_id has them
    names = {**tokenizer.get_vocab(), **getattr(tokenizer, "lang_token_to_id", {})}
    vocab = {piece: i for piece, i in names.items() if i < rows}
    named = set(vocab.values())
    for i in range(rows):
        if i not in named:
            vocab[f"<nmt_unnamed_{i}>"] = i
    if len(vocab) != rows:
        raise NmtError(f"{directory}: the tokenizer gives two pieces one id")
    return vocab


def _language_id(vocab: dict[str, int], lang: str, rows: list[int], option: str) -> int:
    """The nmt id of language `lang`'s token (__lang__)."""
    token = f"__{lang}__"
    if token not in vocab:
        raise NmtError(f"{option} {lang}: the tokenizer has no language token {token}")
    return rows.index(vocab[token])


def m2m100_config(directory: Path, hf, *, langs, prefixes) -> dict:
    """The nmt config (a dict for `config_from_dict`); refuses, naming the config.json key,
    what nmt's Transformer cannot compute."""
    return seq2seq.nmt_config(
        directory,
        hf,
        langs=langs,
        shared=True,
        pre_norm=True,
        reserved_positions=3,  # the language token, </s> as decoder start, and EOS
        model={
            "output_bias": True,  # the copied BOS row (and aliases) kept out of the softmax
            "positions": "fairseq",
            "position_offset": hf.config.pad_token_id + 1,
            "source_prefix_id": prefixes[0],
            "target_prefix_id": prefixes[1],
        },
    )
