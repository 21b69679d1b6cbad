"""An imported vocabulary in nmt's id layout: the row table and the SentencePiece models.

nmt's special ids are fixed (PAD 0, UNK 1, BOS 2, EOS 3, nmt.data.tokenizer) and its
tokenizer is the SentencePiece model itself: a piece's SentencePiece id is its model id.
A transformers Marian directory differs on both counts: vocab.json maps pieces to ids of its
own (OPUS-MT: EOS 0, UNK 1, PAD last; not SentencePiece's ids), and the decoder starts from
PAD, which nmt keeps apart from BOS. The import therefore permutes, it does not translate at
run time:

  * `import_order` puts the transformers ids into nmt's layout: PAD, UNK, the decoder start,
    EOS, then every other id in its transformers order. rows[i] = the transformers row that
    nmt id i takes (embedding rows, output rows, output-bias entries alike).
  * Where the decoder start is PAD (Marian) or EOS (M2M100) it has no id of its own, so
    nmt's BOS is a copy of that row: the same input embedding, and an output logit kept out
    of the softmax by an output bias BOS_MARGIN below the original's (exp(-100) ~ 4e-44: no
    log-probability moves).
  * `reordered_spm` rewrites a SentencePiece model so that its piece i is nmt id i: pieces
    keep their own scores and types, so SentencePiece segments text exactly as before.
    Pieces of the vocabulary that this side's model lacks (the other side's, in a shared
    vocabulary) become UNUSED pieces: never produced by encoding, decoded as their text.
  * Pieces of the SentencePiece model that the vocabulary lacks (transformers reads them as
    UNK) are appended as aliases (`with_aliases`): ids whose rows copy UNK's, kept out of
    the softmax like a copied BOS.

nmt's own models keep their ids and their SentencePiece models untouched: an import of an
`nmt export --to huggingface` directory finds the identity order and keeps the model bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from nmt.errors import NmtError

BOS_MARGIN = 100.0  # nats between PAD's output bias and a copied BOS row's
BOS_NAME = "<s>"


@dataclass(frozen=True)
class ImportOrder:
    """nmt id i is transformers id rows[i], named pieces[i]; `copied_bos`: BOS is a copy of
    the decoder-start row (PAD's or EOS's), not a token of the transformers vocabulary."""

    rows: list[int]
    pieces: list[str]
    copied_bos: bool
    aliases: int = 0  # the last `aliases` ids: pieces the vocabulary lacks, read as UNK


def _model_proto(blob: bytes, where: str):
    """(the parsed SentencePiece ModelProto, its module); needs protobuf, which the
    huggingface extra installs. `where` names the file in errors."""
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
    except ImportError:
        raise NmtError(
            'nmt import huggingface needs the optional extra: pip install "nmt[huggingface]" '
            "(protobuf, to rewrite SentencePiece models)"
        ) from None
    model = pb.ModelProto()
    try:
        model.ParseFromString(blob)
    except Exception as exc:  # protobuf's DecodeError
        raise NmtError(f"{where}: not a SentencePiece model ({exc})") from None
    if not model.pieces:
        raise NmtError(f"{where}: not a SentencePiece model (no pieces)")
    return model, pb


def lost_pieces(blob: bytes, vocab: dict[str, int] | set[str], *, where: str) -> list[str]:
    """Pieces the SentencePiece model `blob` can produce that `vocab` lacks (transformers
    reads them as UNK), in the model's order."""
    model, pb = _model_proto(blob, where)
    kind = pb.ModelProto.SentencePiece
    producible = (kind.NORMAL, kind.USER_DEFINED, kind.BYTE)
    return [p.piece for p in model.pieces if p.type in producible and p.piece not in vocab]


def with_aliases(order: ImportOrder, lost: list[str]) -> ImportOrder:
    """`order` with one more id per lost piece, each a copy of UNK's row: SentencePiece keeps
    producing the piece (its segmentation unchanged), the model reads it as UNK, and an
    output bias BOS_MARGIN below UNK's keeps it out of the softmax."""
    if not lost:
        return order
    rows = order.rows + [order.rows[UNK_ID]] * len(lost)
    return ImportOrder(rows, order.pieces + lost, order.copied_bos, order.aliases + len(lost))


def import_order(
    vocab: dict[str, int], *, pad: int, unk: int, eos: int, start: int, where: str
) -> ImportOrder:
    """The nmt layout of `vocab` (piece -> transformers id, ids 0 .. V-1), see the module
    docstring; `where` names the file in errors."""
    by_id = {i: piece for piece, i in vocab.items()}
    if sorted(by_id) != list(range(len(vocab))):
        raise NmtError(f"{where}: the ids are not 0 .. {len(vocab) - 1}, one per piece")
    for name, i in (("pad", pad), ("unk", unk), ("eos", eos), ("decoder start", start)):
        if i not in by_id:
            raise NmtError(f"{where}: no piece has the {name} id {i}")
    if len({pad, unk, eos}) < 3:
        raise NmtError(f"{where}: pad ({pad}), unk ({unk}) and eos ({eos}) must differ")
    copied = start in (pad, unk, eos)
    specials = {pad, unk, eos, start}
    rest = [i for i in range(len(vocab)) if i not in specials]
    rows = [pad, unk, start, eos] + rest
    bos_name = _unique(BOS_NAME, vocab) if copied else by_id[start]
    pieces = [by_id[pad], by_id[unk], bos_name, by_id[eos]] + [by_id[i] for i in rest]
    assert [PAD_ID, UNK_ID, BOS_ID, EOS_ID] == [0, 1, 2, 3]  # the layout rows[] spells out
    return ImportOrder(rows, pieces, copied)


def _unique(name: str, taken: dict[str, int]) -> str:
    while name in taken:
        name = f"<{name}>"
    return name


def reordered_spm(blob: bytes, pieces: list[str], *, where: str) -> bytes:
    """The SentencePiece model `blob` with piece i = pieces[i] (see the module docstring).

    Refused (naming `where`): a model with pieces encoding can produce that `pieces` lacks
    (`with_aliases` adds them first).
    """
    lost = lost_pieces(blob, set(pieces), where=where)
    if lost:
        raise NmtError(
            f"{where}: {len(lost)} pieces of the SentencePiece model are not in the vocabulary "
            f"(e.g. {', '.join(lost[:3])}); nmt cannot map them to <unk>"
        )
    model, pb = _model_proto(blob, where)
    kind = pb.ModelProto.SentencePiece
    own = {p.piece: p for p in model.pieces}
    specials = {
        PAD_ID: kind.CONTROL,
        UNK_ID: kind.UNKNOWN,
        BOS_ID: kind.CONTROL,
        EOS_ID: kind.CONTROL,
    }
    new = []
    for i, name in enumerate(pieces):
        old = own.get(name)
        if i in specials:
            new.append(kind(piece=name, score=0.0, type=specials[i]))
        elif old is None:
            new.append(kind(piece=name, score=0.0, type=kind.UNUSED))
        else:  # a second UNKNOWN piece would make the model invalid
            piece_type = kind.CONTROL if old.type == kind.UNKNOWN else old.type
            new.append(kind(piece=name, score=old.score, type=piece_type))
    del model.pieces[:]
    model.pieces.extend(new)
    spec = model.trainer_spec
    spec.vocab_size = len(pieces)
    spec.pad_id, spec.unk_id, spec.bos_id, spec.eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID
    spec.pad_piece, spec.unk_piece = pieces[PAD_ID], pieces[UNK_ID]
    spec.bos_piece, spec.eos_piece = pieces[BOS_ID], pieces[EOS_ID]
    return model.SerializeToString()


def spm_ids_match(blob: bytes, pieces: list[str]) -> bool:
    """Whether the model `blob` already has piece i = pieces[i] with nmt's special ids
    (an nmt export): then it is kept byte for byte."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(blob)
    ids = (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id())
    return (
        processor.get_piece_size() == len(pieces)
        and ids == (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
        and all(processor.id_to_piece(i) == p for i, p in enumerate(pieces))
    )
