"""SentencePiece training and encode/decode; the special ids live here and nowhere else."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from nmt.errors import ConfigError, DataError

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3


@dataclass(frozen=True)
class SpmSettings:
    vocab_size: int = 8000
    model_type: str = "unigram"  # unigram | bpe
    character_coverage: float = 1.0
    byte_fallback: bool = True
    input_sentence_size: int = 2_000_000
    seed: int = 1


def train_sentencepiece(sentences: Iterable[str], settings: SpmSettings) -> bytes:
    """Train a SentencePiece model on `sentences`; returns the serialized model.

    SentencePiece samples `input_sentence_size` lines, so memory stays bounded however large
    the corpus. A vocabulary larger than the text supports is reported as a config error.
    """
    model = io.BytesIO()
    spm.set_random_generator_seed(settings.seed)  # the sentence sample is then reproducible
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_non_empty(sentences),
            model_writer=model,
            vocab_size=settings.vocab_size,
            model_type=settings.model_type,
            character_coverage=settings.character_coverage,
            byte_fallback=settings.byte_fallback,
            input_sentence_size=settings.input_sentence_size,
            shuffle_input_sentence=True,
            # Text is already NFC-normalised by `clean.normalize`; identity keeps
            # decode(encode(line)) == line, which NFKC would break ("²" -> "2").
            normalization_rule_name="identity",
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            minloglevel=2,
            num_threads=2,
            train_extremely_large_corpus=False,
        )
    except RuntimeError as exc:
        raise _explain_training_error(str(exc), settings.vocab_size) from None
    return model.getvalue()


def _explain_training_error(message: str, vocab_size: int) -> Exception:
    """Turn SentencePiece's vocabulary-size failures into config errors with the limit."""
    too_high = re.search(r"Vocabulary size (?:is )?too high \((\d+)\).*<= (\d+)", message)
    if too_high:
        return ConfigError(
            [
                f"data.vocab_size: {vocab_size} is more than the training text supports; "
                f"use a value <= {too_high.group(2)}"
            ]
        )
    too_small = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
    if too_small:
        return ConfigError(
            [
                f"data.vocab_size: {vocab_size} is smaller than the {too_small.group(2)} pieces "
                "the characters need; raise it or lower data.character_coverage"
            ]
        )
    return DataError(f"SentencePiece training failed: {message}")


def _non_empty(sentences: Iterable[str]) -> Iterator[str]:
    for s in sentences:
        if s:
            yield s


class Tokenizer:
    """Source and target SentencePiece models (the same object when the vocab is joint)."""

    def __init__(self, src_model: bytes, tgt_model: bytes | None = None):
        self.src_model = src_model
        self.tgt_model = tgt_model if tgt_model is not None else src_model
        self.joint = tgt_model is None or tgt_model == src_model
        self.src = _load_processor(self.src_model)
        self.tgt = self.src if self.joint else _load_processor(self.tgt_model)

    @property
    def src_vocab_size(self) -> int:
        return self.src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt.get_piece_size()

    def encode_src(self, lines: list[str]) -> list[list[int]]:
        """Subword ids without BOS/EOS."""
        return self.src.encode(lines, out_type=int)

    def encode_tgt(self, lines: list[str]) -> list[list[int]]:
        return self.tgt.encode(lines, out_type=int)

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        return self.tgt.decode(ids)

    def decode_src(self, ids: list[list[int]]) -> list[str]:
        return self.src.decode(ids)

    def save(self, directory: Path) -> None:
        """Write spm.model (joint) or spm.src.model + spm.tgt.model."""
        from nmt.files import atomic_write

        names = (
            {"spm.model": self.src_model}
            if self.joint
            else {"spm.src.model": self.src_model, "spm.tgt.model": self.tgt_model}
        )
        for name, blob in names.items():
            with atomic_write(Path(directory) / name, "wb") as f:
                f.write(blob)

    @classmethod
    def load(cls, directory: Path) -> Tokenizer:
        directory = Path(directory)
        joint = directory / "spm.model"
        if joint.exists():
            return cls.from_files(joint)
        src, tgt = directory / "spm.src.model", directory / "spm.tgt.model"
        if src.exists() and tgt.exists():
            return cls.from_files(src, tgt)
        raise DataError(f"no SentencePiece model in {directory} (run `nmt prepare` first)")

    @classmethod
    def from_files(cls, src_path: Path, tgt_path: Path | None = None) -> Tokenizer:
        """The models in these files; a damaged one is a DataError naming its file."""
        blobs = []
        for path in (src_path, tgt_path) if tgt_path is not None else (src_path,):
            blob = Path(path).read_bytes()
            try:
                _load_processor(blob)
            except DataError as exc:
                raise DataError(f"{path}: {exc}") from None
            blobs.append(blob)
        return cls(*blobs)


def _load_processor(blob: bytes) -> spm.SentencePieceProcessor:
    processor = spm.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(blob)
    except (RuntimeError, OSError) as exc:
        raise DataError(f"invalid SentencePiece model: {exc}") from None
    return processor
