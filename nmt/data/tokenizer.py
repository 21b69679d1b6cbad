"""SentencePiece training and encode/decode; the special ids live here and nowhere else."""

from __future__ import annotations

import io
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from nmt.config import SpmModelType
from nmt.errors import ConfigError, DataError

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3


@dataclass(frozen=True)
class SpmSettings:
    vocab_size: int = 8000
    model_type: SpmModelType = "unigram"
    character_coverage: float = 1.0
    byte_fallback: bool = True
    sample: int = 2_000_000  # train on a random sample of at most this many sentences
    seed: int = 1


def train_sentencepiece(sentences: Iterable[str], settings: SpmSettings) -> bytes:
    """Train a SentencePiece model on a sample of the non-empty `sentences`; returns the
    serialized model.

    The sample (`sample_sentences`) is drawn here, in one pass, so memory holds at most
    `settings.sample` sentences however large the corpus, and SentencePiece reads the
    sample only (a corpus within the sample size is passed whole, in its order). A
    vocabulary larger than the text supports is reported as a config error.
    """
    sample = sample_sentences(filter(None, sentences), settings.sample, seed=settings.seed)
    model = io.BytesIO()
    spm.set_random_generator_seed(settings.seed)  # SentencePiece's own draws are reproducible
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample),
            model_writer=model,
            vocab_size=settings.vocab_size,
            model_type=settings.model_type,
            character_coverage=settings.character_coverage,
            byte_fallback=settings.byte_fallback,
            input_sentence_size=settings.sample,  # >= len(sample): SentencePiece keeps all
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


def sample_sentences(sentences: Iterable[str], size: int, *, seed: int) -> list[str]:
    """A uniform random sample of at most `size` of `sentences`, drawn in one pass with
    reservoir sampling (Vitter's algorithm R): memory holds `size` sentences, never more.

    The i-th sentence (0-based) replaces a random slot with probability size / (i + 1), so
    every sentence ends up in the sample with probability size / n. Seeded: the same input,
    size and seed give the same sample. With n <= size the sample is the input, in order.
    """
    rng = random.Random(seed)
    reservoir: list[str] = []
    for i, sentence in enumerate(sentences):
        if i < size:
            reservoir.append(sentence)
            continue
        slot = rng.randrange(i + 1)
        if slot < size:
            reservoir[slot] = sentence
    return reservoir


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

    def encode_src(self, lines: list[str], *, threads: int | None = None) -> list[list[int]]:
        """Subword ids without BOS/EOS; `threads`: SentencePiece's (None: every core)."""
        return self.src.encode(lines, out_type=int, num_threads=threads)

    def encode_tgt(self, lines: list[str], *, threads: int | None = None) -> list[list[int]]:
        return self.tgt.encode(lines, out_type=int, num_threads=threads)

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
