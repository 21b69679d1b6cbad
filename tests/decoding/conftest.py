"""The decoding tests' own fixture; the session's tiny model (`tiny_run`) and the `nmt`
command-line drivers are shared by several directories: tests/plugins/tiny_run.py."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def other_tokenizer_checkpoint(tiny_run, tmp_path_factory):
    """The tiny checkpoint with another SentencePiece model of the same size (BPE): what an
    ensemble with it must refuse."""
    from nmt.checkpoint import (
        bytes_to_tensor,
        load_checkpoint,
        save_checkpoint,
        tensor_to_bytes,
        tokenizer_fingerprint,
    )
    from nmt.data.tokenizer import SpmSettings, Tokenizer, train_sentencepiece

    state = load_checkpoint(tiny_run.checkpoint)
    size = Tokenizer(tensor_to_bytes(state["spm"]["src"])).src_vocab_size
    text = []
    for lang in ("de", "en"):
        text += tiny_run.raw("train", lang).read_text(encoding="utf-8").splitlines()
    blob = train_sentencepiece(text, SpmSettings(vocab_size=size, model_type="bpe"))
    state["spm"] = {"src": bytes_to_tensor(blob), "tgt": bytes_to_tensor(blob)}
    state["fingerprint"] = {**state["fingerprint"], "tokenizer": tokenizer_fingerprint(blob, blob)}
    path = tmp_path_factory.mktemp("other") / "other.pt"
    save_checkpoint(path, state)
    return path
