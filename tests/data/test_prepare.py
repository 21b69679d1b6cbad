from __future__ import annotations

import json

import numpy as np
import pytest
from _shared import tiny_data_config

from nmt.config import load_config
from nmt.data.download import download
from nmt.data.prepare import load_prepared, prepare, prepared_dir
from nmt.data.text import read_lines
from nmt.data.tokenizer import Tokenizer
from nmt.errors import ConfigError, DataError


@pytest.fixture
def downloaded(in_tmp, small_mirror):
    download("multi30k", languages=["de", "en"], mirror=small_mirror)
    return in_tmp


def test_prepare_round_trips_every_cleaned_line(downloaded):
    cfg = tiny_data_config()
    result = prepare(cfg)
    out = prepared_dir(cfg)
    tok = Tokenizer.load(out)
    assert tok.joint and tok.src_vocab_size == 500
    for split in ("train", "val", "test_2016_flickr"):
        src, tgt = load_prepared(cfg, split)
        cleaned_src = read_lines(out / f"{split}.de")
        cleaned_tgt = read_lines(out / f"{split}.en")
        assert len(src) == len(tgt) == len(cleaned_src) == result.stats["splits"][split]["pairs"]
        assert tok.decode_src([src[i].tolist() for i in range(len(src))]) == cleaned_src
        assert tok.decode_tgt([tgt[i].tolist() for i in range(len(tgt))]) == cleaned_tgt
    # The memory-mapped ids hold exactly the SentencePiece encoding, without BOS/EOS.
    src, _ = load_prepared(cfg, "val")
    assert isinstance(src.ids, np.memmap)
    assert src[0].tolist() == tok.encode_src([read_lines(out / "val.de")[0]])[0]


def test_prepare_reports_counts_and_keeps_eval_lines(downloaded):
    result = prepare(tiny_data_config())
    splits = result.stats["splits"]
    assert splits["train"]["read"] == 400
    assert splits["train"]["kept"] + sum(splits["train"]["dropped"].values()) == 400
    assert splits["val"] == splits["val"] | {"read": 40, "kept": 40, "pairs": 40}
    pct = splits["train"]["length_percentiles"]["src"]
    assert pct["p50"] <= pct["p90"] <= pct["p99"] <= pct["max"]
    assert (
        json.loads((prepared_dir(tiny_data_config()) / "prepare.json").read_text())["vocab"]["src"]
        == 500
    )


def test_prepare_skips_unchanged_inputs_and_redoes_changed_ones(downloaded):
    cfg = tiny_data_config()
    assert not prepare(cfg).skipped
    assert prepare(cfg).skipped
    assert not prepare(tiny_data_config(**{"data.vocab_size": 400})).skipped
    raw = downloaded / "data" / "multi30k" / "val.en"
    raw.write_text(raw.read_text().replace("A ", "The ", 1))
    assert not prepare(tiny_data_config(**{"data.vocab_size": 400})).skipped


def test_separate_vocabularies_and_bpe(downloaded):
    cfg = tiny_data_config(
        **{
            "data.joint_vocab": "false",
            "model.share_embeddings": "false",
            "data.spm_model_type": "bpe",
            "data.vocab_size": 600,
        }
    )
    prepare(cfg)
    tok = Tokenizer.load(prepared_dir(cfg))
    assert not tok.joint
    assert (prepared_dir(cfg) / "spm.src.model").exists()


def test_a_damaged_sentencepiece_model_is_named(downloaded):
    """Found broken: `invalid SentencePiece model: INTERNAL: ...` named no file (train,
    translate of a CTranslate2 directory)."""
    cfg = tiny_data_config(**{"data.joint_vocab": "false", "model.share_embeddings": "false"})
    prepare(cfg)
    tgt = prepared_dir(cfg) / "spm.tgt.model"
    tgt.write_bytes(tgt.read_bytes()[:100])
    with pytest.raises(DataError, match="invalid SentencePiece model") as caught:
        load_prepared(cfg, "train")
    assert str(caught.value).startswith(f"{tgt}: ")


def test_training_pairs_over_the_token_limit_are_dropped_eval_truncated(downloaded):
    cfg = tiny_data_config(**{"data.max_tokens_per_sentence": 12})
    stats = prepare(cfg).stats["splits"]
    assert stats["train"]["dropped_too_many_tokens"] > 0
    assert stats["val"]["pairs"] == 40 and stats["val"]["truncated"] > 0
    src, tgt = load_prepared(cfg, "val")
    assert src.lengths.max() <= 12 and tgt.lengths.max() <= 12


def test_vocab_larger_than_the_corpus_supports(downloaded):
    with pytest.raises(
        ConfigError, match="data.vocab_size: 60000 is more than the training text supports"
    ):
        prepare(tiny_data_config(**{"data.vocab_size": 60000}))


def test_vocab_smaller_than_the_characters_need(downloaded):
    with pytest.raises(ConfigError, match="data.vocab_size: 100 is smaller than the"):
        prepare(tiny_data_config(**{"data.vocab_size": 100, "data.spm_model_type": "bpe"}))


def test_missing_corpus_and_mismatched_counts(in_tmp, small_mirror):
    with pytest.raises(
        DataError, match="corpus file not found: .*train.de; run `nmt download multi30k"
    ):
        prepare(tiny_data_config())
    download("multi30k", languages=["de", "en"], mirror=small_mirror)
    raw = in_tmp / "data" / "multi30k" / "train.en"
    raw.write_text(raw.read_text() + "one more line\n")
    with pytest.raises(DataError, match=r"train.de has 400 lines but .*train.en has 401"):
        prepare(tiny_data_config())
    assert not (prepared_dir(tiny_data_config()) / "prepare.json").exists()


def test_all_lines_filtered_out(in_tmp):
    d = in_tmp / "data" / "odd"
    d.mkdir(parents=True)
    for split in ("train", "val"):
        (d / f"{split}.de").write_text("a\n\n")
        (d / f"{split}.en").write_text("a much much longer sentence than the source\n\n")
    cfg = load_config(None, ["data.corpus=odd", "data.test_splits=[]", "data.vocab_size=50"])
    with pytest.raises(DataError, match="every training pair was filtered out"):
        prepare(cfg)
