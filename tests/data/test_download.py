from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from nmt.data.download import download, register_files
from nmt.errors import DataError


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_multi30k_from_the_shared_mirror(in_tmp, shared_data):
    result = download("multi30k", languages=["de", "en"], data_dir="data", mirror=shared_data)
    assert not result.skipped
    names = sorted(result.files)
    # The mirror lacks test_2018_flickr and test_2017_mscoco: they are skipped, not invented.
    assert names == sorted(
        f"{s}.{lang}"
        for s in ("train", "val", "test_2016_flickr", "test_2017_flickr")
        for lang in ("de", "en")
    )
    out = in_tmp / "data" / "multi30k"
    assert (out / "train.de").read_bytes() == (shared_data / "multi30k" / "train.de").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())["files"]
    assert manifest["train.en"]["lines"] == 29000
    assert manifest["val.de"]["lines"] == 1014
    assert manifest["train.de"]["sha256"] == sha(shared_data / "multi30k" / "train.de")
    assert manifest["train.de"]["source"].startswith("mirror:")


def test_rerun_is_a_no_op_and_repairs_damage(in_tmp, small_mirror):
    download("multi30k", languages=["de", "en"], splits=["val"], mirror=small_mirror)
    target = in_tmp / "data" / "multi30k" / "val.en"
    before = target.stat().st_mtime_ns
    again = download("multi30k", languages=["de", "en"], splits=["val"], mirror=small_mirror)
    assert again.skipped and target.stat().st_mtime_ns == before
    target.write_text("tampered\n")
    repaired = download("multi30k", languages=["de", "en"], splits=["val"], mirror=small_mirror)
    assert not repaired.skipped
    assert target.read_bytes() == (small_mirror / "multi30k" / "val.en").read_bytes()


def test_mirror_from_environment_variable(in_tmp, small_mirror, monkeypatch):
    monkeypatch.setenv("NMT_DATA_MIRROR", str(small_mirror))
    result = download("multi30k", languages=["en", "de"], splits=["test_2016_flickr"])
    assert result.files["test_2016_flickr.de"]["lines"] == 40


def test_wmt_newstest_from_the_shared_mirror(in_tmp, shared_data):
    result = download(
        "wmt_newstest", languages=["de", "en"], splits=["newstest2014"], mirror=shared_data
    )
    assert result.files["newstest2014.de"]["lines"] == 3003


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="nope", languages=["de"]), "unknown corpus 'nope'; known corpora: multi30k"),
        (
            dict(name="multi30k", languages=["xx"]),
            "has no language 'xx'; valid languages: en, de, fr, cs",
        ),
        (
            dict(name="multi30k", languages=["de"], splits=["dev"]),
            "has no split 'dev'; valid splits: train, val",
        ),
        (
            dict(name="multi30k", languages=["cs"], splits=["test_2017_flickr"]),
            "has no cs; it has: en, de, fr",
        ),
    ],
)
def test_unknown_corpus_language_split_list_valid_choices(in_tmp, small_mirror, kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        download(name, mirror=small_mirror, **kwargs)


def test_user_files_plain_and_gzip(in_tmp):
    src, tgt = in_tmp / "a.de", in_tmp / "b.en.gz"
    src.write_text("Hallo Welt\nGuten Tag\n", encoding="utf-8")
    with gzip.open(tgt, "wt", encoding="utf-8") as f:
        f.write("Hello world\nGood day\n")
    result = register_files("mine", src=src, tgt=tgt, src_lang="de", tgt_lang="en")
    assert (in_tmp / "data" / "mine" / "train.en").read_text() == "Hello world\nGood day\n"
    assert result.files["train.de"]["lines"] == 2


def test_user_files_with_different_line_counts_name_both(in_tmp):
    src, tgt = in_tmp / "a.de", in_tmp / "b.en"
    src.write_text("1\n2\n3\n")
    tgt.write_text("1\n2\n")
    with pytest.raises(DataError) as info:
        register_files("mine", src=src, tgt=tgt, src_lang="de", tgt_lang="en")
    assert str(info.value) == f"line counts differ: {src} has 3 lines but {tgt} has 2"
    assert not (in_tmp / "data" / "mine").exists()


def test_invalid_utf8_names_file_and_line(in_tmp):
    src, tgt = in_tmp / "a.de", in_tmp / "b.en"
    src.write_bytes(b"ok\nalso ok\nbad \xff byte\n")
    tgt.write_text("1\n2\n3\n")
    with pytest.raises(DataError, match=r"a.de: line 3 is not valid UTF-8"):
        register_files("mine", src=src, tgt=tgt, src_lang="de", tgt_lang="en")
    assert not (in_tmp / "data" / "mine").exists()  # nothing written at all


def test_missing_and_empty_files(in_tmp):
    empty = in_tmp / "empty.de"
    empty.write_text("")
    with pytest.raises(DataError, match="file not found: .*missing.en"):
        register_files("mine", src=empty, tgt=in_tmp / "missing.en", src_lang="de", tgt_lang="en")
    (in_tmp / "x.en").write_text("x\n")
    with pytest.raises(DataError, match="empty.de is empty"):
        register_files("mine", src=empty, tgt=in_tmp / "x.en", src_lang="de", tgt_lang="en")


def test_local_datasets_loadable_directory(in_tmp):
    pytest.importorskip("datasets")
    folder = in_tmp / "hub"
    folder.mkdir()
    rows = [{"translation": {"de": f"Satz {i}", "en": f"Sentence {i}"}} for i in range(5)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "test.jsonl").write_text(json.dumps(rows[0]) + "\n")
    result = download(f"hf:{folder}", languages=["de", "en"])
    out = result.directory
    assert (out / "train.de").read_text().splitlines() == [f"Satz {i}" for i in range(5)]
    assert (out / "test.en").read_text() == "Sentence 0\n"
    assert result.files["train.en"]["source"].startswith("hf:")
