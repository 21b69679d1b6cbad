"""Fixtures of the interop tests: real SentencePiece models and real Multi30k sentences
(the random-weight checkpoints themselves are built by `_models.make_checkpoint`)."""

from __future__ import annotations

from pathlib import Path

import pytest

# The optional extras (pip install -e ".[dev,ctranslate2,huggingface]", as .ci/run does):
# without them these tests are reported as skipped, not as failures of nmt.
pytest.importorskip("ctranslate2")
pytest.importorskip("transformers")

from _models import SENTENCES, VOCAB, lines  # noqa: E402

from nmt.data.tokenizer import SpmSettings, train_sentencepiece


@pytest.fixture(scope="session")
def spm_models(shared_data: Path) -> dict[str, bytes]:
    """Real SentencePiece models trained on 3000 Multi30k lines: joint, de, en."""
    de, en = lines(shared_data, "de", 3000), lines(shared_data, "en", 3000)
    settings = SpmSettings(vocab_size=VOCAB)
    return {
        "joint": train_sentencepiece(de + en, settings),
        "de": train_sentencepiece(de, settings),
        "en": train_sentencepiece(en, settings),
    }


@pytest.fixture(scope="session")
def test_sentences(shared_data: Path) -> list[str]:
    """The first 200 German sentences of Multi30k's test_2016_flickr."""
    return lines(shared_data, "de", SENTENCES, split="test_2016_flickr")
