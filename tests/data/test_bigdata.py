"""Data bigger than memory: SentencePiece's bounded seeded sample, prepare's encoding in
processes (the same bytes as in one), arrays streamed to disk, hf: datasets written as they
stream."""

from __future__ import annotations

import itertools
import json
import statistics
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from _shared import tiny_data_config

from nmt.checkpoint import checkpoint_config
from nmt.config import config_from_dict, load_config
from nmt.data import prepare as prepare_module
from nmt.data.binarize import TokenArray, TokenArrayWriter, write_token_array
from nmt.data.clean import CleanStats, FilterSettings, SeenHashes, filter_pairs
from nmt.data.download import download, write_hub_split
from nmt.data.prepare import prepare, prepared_dir
from nmt.data.text import read_lines
from nmt.data.tokenizer import SpmSettings, Tokenizer, sample_sentences, train_sentencepiece
from nmt.errors import ConfigError, DataError

# --------------------------------------------------------------------------- the sample


def test_reservoir_sample_is_bounded_seeded_and_whole_when_small():
    lines = [f"line {i}" for i in range(5000)]
    sample = sample_sentences(iter(lines), 300, seed=7)
    assert len(sample) == 300 and len(set(sample)) == 300 and set(sample) <= set(lines)
    assert sample == sample_sentences(iter(lines), 300, seed=7)  # seeded
    assert sample != sample_sentences(iter(lines), 300, seed=8)
    # Not a prefix: the last lines are as likely to be drawn as the first.
    drawn = [int(s.split()[1]) for s in sample]
    assert max(drawn) > 4000 and abs(statistics.mean(drawn) - 2499.5) < 250
    # A corpus within the sample size is passed whole and in order (what SentencePiece
    # trained on before the sample was drawn here: the same models for such corpora).
    assert sample_sentences(iter(lines), 5000, seed=7) == lines
    assert sample_sentences(iter(lines[:10]), 300, seed=7) == lines[:10]


def test_reservoir_sample_is_uniform():
    """Every line is drawn with probability size / n: over 400 seeded draws of 10 of 50
    lines, each line is drawn about 400 * 10 / 50 = 80 times (binomial sd 8)."""
    counts = np.zeros(50, int)
    for seed in range(400):
        for s in sample_sentences(map(str, range(50)), 10, seed=seed):
            counts[int(s)] += 1
    assert counts.sum() == 4000
    assert counts.min() > 80 - 4 * 8 and counts.max() < 80 + 4 * 8


def test_the_sample_holds_memory_to_its_size_not_the_corpus():
    """100,000 lines streamed through a sample of 1000: the traced peak is that of the
    sample (about 1000 short strings), far below the corpus as a list (about 10 MB)."""

    def corpus():
        return (f"sentence number {i} of a corpus too large to hold" for i in range(100_000))

    tracemalloc.start()
    try:
        sample = sample_sentences(corpus(), 1000, seed=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(sample) == 1000
    assert peak < 500_000, peak


def test_sentencepiece_trains_on_the_sample_only(corpus_slice):
    """The model trained with a sample of 600 of 2000 lines is the model trained on those
    600 lines: SentencePiece sees nothing else."""
    lines = read_lines(corpus_slice / "multi30k" / "train.en")
    settings = SpmSettings(vocab_size=500, sample=600, seed=3)
    model = train_sentencepiece(lines, settings)
    chosen = sample_sentences(iter(lines), 600, seed=3)
    assert model == train_sentencepiece(chosen, settings)
    assert model != train_sentencepiece(lines[:600], settings)


# --------------------------------------------------------------------------- dedup


def test_dedup_keeps_the_first_of_each_pair_across_merges(monkeypatch):
    """Hashes move from the recent set into the sorted array every 7: duplicates are found
    in either, as a plain set finds them."""
    monkeypatch.setattr(SeenHashes, "MERGE_EVERY", 7)
    pairs = [(f"s{i % 40}", f"t{i % 40}") for i in range(300)] + [("s1", "other")]
    stats = CleanStats()
    kept = list(filter_pairs(iter(pairs), FilterSettings(), stats))
    assert kept == pairs[:40] + [("s1", "other")]
    assert stats.dropped == {"duplicate": 260} and stats.kept == 41


def test_dedup_memory_is_8_bytes_a_pair(monkeypatch):
    """50,000 distinct pairs: a set of their hashes takes about 90 bytes each (4.5 MB);
    SeenHashes 8 each, 16 while a merge copies the array (0.8 MB), plus the recent set."""
    monkeypatch.setattr(SeenHashes, "MERGE_EVERY", 500)
    pairs = ((f"Satz {i}", f"sentence {i}") for i in range(50_000))
    tracemalloc.start()
    try:
        kept = sum(1 for _ in filter_pairs(pairs, FilterSettings(), CleanStats()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept == 50_000
    assert peak < 1_500_000, peak


# --------------------------------------------------------------------------- the key


def test_spm_sample_replaces_spm_input_sentence_size_which_still_loads(tmp_path):
    assert load_config(None, ["data.spm_sample=1000"]).data.spm_sample == 1000
    # Configs, checkpoints and exports written before the rename hold the old key.
    old = {"data": {"spm_input_sentence_size": 1234}}
    assert config_from_dict(old).data.spm_sample == 1234
    saved = checkpoint_config({"config": old}, tmp_path / "old.pt")
    assert saved.data.spm_sample == 1234
    with pytest.raises(ConfigError, match=r"data.spm_input_sentence_size: renamed data.spm_"):
        config_from_dict({"data": {"spm_input_sentence_size": 1, "spm_sample": 2}})
    with pytest.raises(ConfigError, match=r"data.encode_workers: -1 is out of range"):
        load_config(None, ["data.encode_workers=-1"])


# --------------------------------------------------------------------------- encoding


@pytest.fixture
def downloaded(in_tmp, small_mirror):
    download("multi30k", languages=["de", "en"], mirror=small_mirror)
    return in_tmp


def test_encoding_processes_write_what_one_process_writes(downloaded, monkeypatch):
    """Chunks of 50 lines: the 400 training pairs are 8 chunks, encoded by 3 processes out
    of order; the arrays (and every other file) are byte for byte those of 1 process, and
    hold each cleaned line's own encoding."""
    monkeypatch.setattr(prepare_module, "_ENCODE_CHUNK", 50)
    outputs = {}
    for workers in (1, 3):
        cfg = tiny_data_config(**{"run_dir": f"runs/w{workers}", "data.encode_workers": workers})
        prepare(cfg)
        out = prepared_dir(cfg)
        outputs[workers] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    stats = [json.loads(outputs[w].pop("prepare.json")) for w in (1, 3)]
    assert outputs[1] == outputs[3]
    assert stats[0] == stats[1]  # the fingerprint leaves encode_workers out
    out = Path("runs/w3/data")
    tok = Tokenizer.load(out)
    ids = TokenArray(out / "train.de")
    lines = read_lines(out / "train.de")
    assert len(ids) == len(lines) == stats[0]["splits"]["train"]["pairs"]
    assert [ids[i].tolist() for i in range(len(ids))] == tok.encode_src(lines)


def test_the_writer_writes_what_np_save_writes(tmp_path):
    rows = [[i % 997 + 3] * (i % 7) for i in range(500)]
    write_token_array(tmp_path / "a", rows, vocab_size=1000)
    flat = np.array(list(itertools.chain.from_iterable(rows)), np.uint16)
    offsets = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    np.save(tmp_path / "b.ids.npy", flat)
    np.save(tmp_path / "b.offsets.npy", offsets)
    for part in ("ids", "offsets"):
        written, saved = (tmp_path / f"{stem}.{part}.npy" for stem in "ab")
        assert written.read_bytes() == saved.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("a.")) == [
        "a.ids.npy",
        "a.offsets.npy",
    ]  # no raw temporaries left


def _binarize_peak(out: Path, lines: int, monkeypatch) -> int:
    """Traced peak memory of encoding and writing `lines` pairs (chunks of 200)."""
    monkeypatch.setattr(prepare_module, "_ENCODE_CHUNK", 200)
    cfg = tiny_data_config(**{"data.encode_workers": 1})
    src = read_lines(out / "train.de")
    tgt = read_lines(out / "train.en")
    for lang, text in (("de", src), ("en", tgt)):
        repeated = itertools.islice(itertools.cycle(text), lines)
        (out / f"big.{lang}").write_text("".join(f"{s}\n" for s in repeated), encoding="utf-8")
    tok = Tokenizer.load(out)
    tracemalloc.start()
    try:
        stats = prepare_module._binarize_split(cfg.data, "big", tok, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats["pairs"] == lines
    return peak


def test_encoding_memory_does_not_grow_with_the_split(downloaded, monkeypatch):
    """Encoding 8,000 pairs peaks no higher than 1,000 (chunks of 200 either way): ids
    and offsets go to disk as they are made. Before, offsets were a Python list (36 bytes a
    sentence) and closing read every id back into memory."""
    cfg = tiny_data_config()
    prepare(cfg)
    out = prepared_dir(cfg)
    small = _binarize_peak(out, 1_000, monkeypatch)
    large = _binarize_peak(out, 8_000, monkeypatch)
    assert large < 1.3 * small, (small, large)


def test_writer_length_counts(tmp_path):
    writer = TokenArrayWriter(tmp_path / "x", vocab_size=100)
    writer.add([5, 6, 7])
    writer.add_many(np.array([4, 4, 4, 4, 9], np.int32), np.array([0, 4, 1]))
    assert writer.sentences == 4 and writer.length_counts.tolist() == [1, 1, 0, 1, 1]
    assert writer.close() == 8
    arr = TokenArray(tmp_path / "x", vocab_size=100)
    assert [arr[i].tolist() for i in range(len(arr))] == [[5, 6, 7], [], [4, 4, 4, 4], [9]]


# --------------------------------------------------------------------------- hf: streaming


def test_a_local_parquet_dataset_is_written_line_for_line(in_tmp, corpus_slice):
    """A parquet file built from the fixture slice, read through `hf:<folder>` (the real
    `datasets` library, streaming): the written files are the input lines."""
    datasets = pytest.importorskip("datasets")
    m30k = corpus_slice / "multi30k"
    folder = in_tmp / "hub"
    folder.mkdir()
    for split, n in (("train", 2000), ("validation", 100)):
        de = read_lines(m30k / f"{'val' if split == 'validation' else split}.de")[:n]
        en = read_lines(m30k / f"{'val' if split == 'validation' else split}.en")[:n]
        rows = [{"translation": {"de": d, "en": e}} for d, e in zip(de, en)]
        datasets.Dataset.from_list(rows).to_parquet(str(folder / f"{split}.parquet"))
    result = download(f"hf:{folder}", languages=["de", "en"])
    out = result.directory
    assert read_lines(out / "train.de") == read_lines(m30k / "train.de")[:2000]
    assert read_lines(out / "train.en") == read_lines(m30k / "train.en")[:2000]
    assert read_lines(out / "validation.en") == read_lines(m30k / "val.en")[:100]
    assert result.files["train.de"]["lines"] == 2000
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", "train.de", "train.en", "validation.de", "validation.en"]
    )


def test_hub_rows_are_written_as_they_stream(tmp_path, corpus_slice):
    """The rows come from a generator (through datasets' IterableDataset); by the 3000th
    row, more than 100 KB of text is already on disk: the split is never gathered first."""
    datasets = pytest.importorskip("datasets")
    de = read_lines(corpus_slice / "multi30k" / "train.de")
    en = read_lines(corpus_slice / "multi30k" / "train.en")
    seen_on_disk = []

    def rows():
        for i in range(4000):
            if i == 3000:
                seen_on_disk.append(sum(p.stat().st_size for p in tmp_path.glob(".*.tmp")))
            yield {"translation": {"de": de[i % 2000], "en": en[i % 2000]}}

    stream = datasets.IterableDataset.from_generator(rows)
    files = {"de": tmp_path / "train.de", "en": tmp_path / "train.en"}
    assert write_hub_split(stream, files, dataset="gen") == 4000
    assert seen_on_disk[0] > 100_000
    assert read_lines(files["en"]) == (en * 2)[:4000]
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_hub_row_without_the_language_leaves_no_file(tmp_path):
    rows = [{"translation": {"de": "a", "en": "b"}}, {"translation": {"de": "c"}}]
    files = {"de": tmp_path / "train.de", "en": tmp_path / "train.en"}
    with pytest.raises(DataError, match=r"row 1 has no language 'en': \['de'\]"):
        write_hub_split(iter(rows), files, dataset="mine")
    with pytest.raises(DataError, match=r"row 0 has no 'translation' mapping \(columns: \['x'\]"):
        write_hub_split(iter([{"x": 1}]), files, dataset="mine")
    with pytest.raises(DataError, match=r"row 0: its 'en' text is None, not a string"):
        write_hub_split(iter([{"translation": {"de": "a", "en": None}}]), files, dataset="mine")
    assert list(tmp_path.iterdir()) == []
