"""Bad corpora through `nmt download` (a mirror or --src/--tgt files) and `nmt prepare`.

Two kinds of input. Awkward but usable text (a BOM, Windows CRLF line ends, a NUL byte,
control characters, line separators inside a line, mixed scripts, a 1 MB line) is accepted:
`download` copies it byte for byte, and `prepare` normalises it line by line. Lines never
split or merge. Every dropped pair is counted. Broken input (misaligned files, invalid
UTF-8, UTF-16, CR-only line ends, empty files, a corpus that the filters empty) stops with
one `error: ...` line that names the file. No traceback is printed, and nothing
half-written is left in data/ or runs/.

Most cases run the CLI in this process (typer's CliRunner). The `dirty_run` fixture runs
the real `python -m nmt.cli` entry point twice, and so does one failure case.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _cli import assert_clean_failure, run_process

from nmt.data.tokenizer import Tokenizer

MEGABYTE_LINE = "x" * 1_000_000  # one "word": dropped by data.max_chars
MEGABYTE_WORDS = "Hund " * 200_000  # 200,000 words: truncated to data.max_tokens_per_sentence

# (raw source line, raw target line, the cleaned source line or None when dropped, why)
DIRTY_PAIRS = [
    (
        "\ufeffZwei Männer stehen am Herd .",
        "Two men stand at the stove .",
        "Zwei Männer stehen am Herd .",
        "BOM",
    ),
    ("Ein\x00 Hund rennt .", "A dog runs .", "Ein Hund rennt .", "NUL byte"),
    (
        "Zwei\x0bHunde\x0cspielen\x1cim\u2028Schnee\x85.",
        "Two dogs play in the snow .",
        "Zwei Hunde spielen im Schnee .",
        "separators str.splitlines would split on",
    ),
    (
        "Der Hund 犬 собака كلب 🐕 spielt .",
        "The dog 犬 собака كلب 🐕 plays .",
        "Der Hund 犬 собака كلب 🐕 spielt .",
        "mixed scripts",
    ),
    ("\x00\x07\x1b", "Nothing but controls .", None, "only control characters: empty"),
    (MEGABYTE_LINE, "A very long line .", None, "1 MB line: too long"),
]


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def nmt(in_tmp, cli_inline):
    """`nmt(*args)`: the CLI in this process (`cli_inline`), cwd = the test's empty tmp dir."""
    return cli_inline


def files_under(root: Path) -> list[str]:
    """Every file below `root` (temporaries included), relative, sorted."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def head(path: Path, n: int) -> list[str]:
    """The first `n` lines of a UTF-8 file, without their line ends."""
    with open(path, encoding="utf-8", newline="\n") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def lf_text(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8")


def config(path: Path, corpus: str, **data) -> Path:
    """A small config for `corpus`: train/val only, tiny model, a small vocabulary."""
    settings = {"corpus": corpus, "test_splits": [], "vocab_size": 400, **data}
    body = {"name": "f", "data": settings, "model": {"preset": "tiny"}}
    path.write_text(json.dumps(body), encoding="utf-8")  # JSON is YAML
    return path


def download_val(mirror: Path) -> list:
    """`nmt download` arguments for Multi30k's val split, de and en, from `mirror`."""
    return ["download", "multi30k", "--langs", "de,en", "--split", "val", "--mirror", mirror.parent]


def register(nmt, corpus: str, src: Path, tgt: Path, split: str = "train"):
    return nmt(
        *("download", corpus, "--src", src, "--tgt", tgt),
        *("--src-lang", "de", "--tgt-lang", "en", "--split", split),
    )


# --------------------------------------------------------------------------- awkward input

# Prints the process's peak resident memory (KiB) to stderr at exit. VmHWM, not getrusage's
# ru_maxrss: Linux folds the RSS of the (v)forked parent, i.e. the whole pytest process, into
# ru_maxrss at exec, so that figure depends on which tests ran before.
REPORT_PEAK_MEMORY = """
import atexit, re, sys
def peak():
    with open("/proc/self/status") as f:
        return re.search(r"VmHWM:\\s+(\\d+)", f.read()).group(1)
atexit.register(lambda: print("peak-rss-kb", peak(), file=sys.stderr))
"""


@pytest.fixture(scope="module")
def dirty_run(tmp_path_factory, corpus_slice):
    """A mirror whose train.de has a BOM, CRLF line ends and DIRTY_PAIRS before 400 real
    Multi30k lines, and whose val split ends with a 1 MB line. It is downloaded, then
    prepared with the real entry point, which also reports its peak memory."""
    root = tmp_path_factory.mktemp("dirty")
    mirror = root / "mirror" / "multi30k"
    real_de = head(corpus_slice / "multi30k" / "train.de", 400)
    real_en = head(corpus_slice / "multi30k" / "train.en", 400)
    train_de = [p[0] for p in DIRTY_PAIRS] + real_de
    train_en = [p[1] for p in DIRTY_PAIRS] + real_en
    write_bytes(mirror / "train.de", "".join(f"{line}\r\n" for line in train_de).encode())
    write_bytes(mirror / "train.en", lf_text(train_en))
    val_de = head(corpus_slice / "multi30k" / "val.de", 40) + [MEGABYTE_WORDS]
    val_en = head(corpus_slice / "multi30k" / "val.en", 40) + ["dog " * 200_000]
    write_bytes(mirror / "val.de", lf_text(val_de))
    write_bytes(mirror / "val.en", lf_text(val_en))
    download = run_process(
        *("download", "multi30k", "--langs", "de,en", "--split", "train", "--split", "val"),
        *("--mirror", mirror.parent),
        cwd=root,
    )
    assert download.returncode == 0, download.stderr
    prepare = run_process(
        "prepare", config(root / "c.yaml", "multi30k"), cwd=root, prelude=REPORT_PEAK_MEMORY
    )
    assert prepare.returncode == 0, prepare.stderr
    assert "Traceback" not in prepare.stderr
    out = root / "runs" / "f" / "data"
    return {
        "root": root,
        "mirror": mirror,
        "out": out,
        "stats": json.loads((out / "prepare.json").read_text()),
        "real_de": real_de,
        "peak_kb": int(prepare.stderr.split("peak-rss-kb")[1].split()[0]),
    }


def test_download_copies_awkward_text_byte_for_byte(dirty_run):
    """BOM, CRLF, NUL and a 1 MB line are the corpus's own: download never rewrites them."""
    for name in ("train.de", "train.en", "val.de", "val.en"):
        copy = dirty_run["root"] / "data" / "multi30k" / name
        assert copy.read_bytes() == (dirty_run["mirror"] / name).read_bytes(), name
    manifest = json.loads((dirty_run["root"] / "data" / "multi30k" / "manifest.json").read_text())
    assert manifest["files"]["train.de"]["lines"] == len(DIRTY_PAIRS) + 400
    assert manifest["files"]["val.de"]["lines"] == 41
    names = ["manifest.json", "train.de", "train.en", "val.de", "val.en"]
    assert files_under(dirty_run["root"] / "data") == [f"multi30k/{n}" for n in names]


def test_prepare_leaves_no_temporary_files(dirty_run):
    leftovers = [f for f in files_under(dirty_run["root"] / "runs") if "/." in f or ".tmp" in f]
    assert leftovers == []


def test_prepare_cleans_bom_crlf_nul_controls_and_keeps_scripts(dirty_run):
    cleaned = (dirty_run["out"] / "train.de").read_text(encoding="utf-8").split("\n")[:-1]
    expected = [p[2] for p in DIRTY_PAIRS if p[2] is not None]
    assert cleaned[: len(expected)] == expected
    # The real lines follow unchanged except for whitespace runs (2 have a double space).
    assert cleaned[len(expected) :] == [" ".join(x.split()) for x in dirty_run["real_de"]]
    for name in ("train.de", "train.en", "val.de", "val.en"):
        text = (dirty_run["out"] / name).read_text(encoding="utf-8")
        assert "\r" not in text and "\ufeff" not in text and "\x00" not in text, name


def test_every_dropped_pair_is_counted_by_reason(dirty_run):
    train = dirty_run["stats"]["splits"]["train"]
    assert train["read"] == len(DIRTY_PAIRS) + 400
    assert train["dropped"] == {"empty": 1, "too_long": 1}
    assert train["kept"] == train["read"] - 2 == train["pairs"]
    assert len((dirty_run["out"] / "train.en").read_text().splitlines()) == train["kept"]


def test_megabyte_dev_line_is_truncated_not_dropped_and_memory_stays_small(dirty_run):
    from nmt.data.binarize import TokenArray

    val = dirty_run["stats"]["splits"]["val"]
    assert (val["read"], val["pairs"], val["truncated"]) == (41, 41, 1)
    src = TokenArray(dirty_run["out"] / "val.de")
    assert len(src) == 41 and src.lengths[-1] == 250  # data.max_tokens_per_sentence
    assert dirty_run["peak_kb"] < 400_000, dirty_run["peak_kb"]  # measured: ~150 MB


def test_mixed_scripts_round_trip_through_the_tokenizer(dirty_run):
    tokenizer = Tokenizer.load(dirty_run["out"])
    line = DIRTY_PAIRS[3][2]
    assert tokenizer.decode_src(tokenizer.encode_src([line])) == [line]


# --------------------------------------------------------------------------- broken input


def test_misaligned_mirror_split_is_refused_and_never_recorded(nmt, in_tmp):
    """Found broken: the files were written and put in the manifest, and a second run said
    'already present' and exited 0 with the misaligned split."""
    mirror = in_tmp / "mirror" / "multi30k"
    write_bytes(mirror / "train.de", lf_text(["eins", "zwei", "drei"]))
    write_bytes(mirror / "train.en", lf_text(["one", "two"]))
    args = ("download", "multi30k", "--langs", "de,en", "--split", "train")
    args += ("--mirror", mirror.parent)
    first = run_process(*args, cwd=in_tmp)
    assert_clean_failure(
        first,
        "line counts differ",
        f"{mirror / 'train.de'} has 3 lines",
        f"{mirror / 'train.en'} has 2",
    )
    assert files_under(in_tmp / "data") == []
    assert_clean_failure(nmt(*args), "line counts differ")  # a re-run fails the same way


def test_invalid_utf8_in_a_mirror_file_names_the_file_and_line(nmt, in_tmp):
    mirror = in_tmp / "mirror" / "multi30k"
    write_bytes(mirror / "val.de", lf_text(["eins", "zwei"]))
    write_bytes(mirror / "val.en", b"one\nt\xe9o\n")  # Latin-1, not UTF-8
    result = nmt(*download_val(mirror))
    assert_clean_failure(result, f"{mirror / 'val.en'}: line 2 is not valid UTF-8")
    assert files_under(in_tmp / "data") == []


def test_empty_mirror_file_is_refused(nmt, in_tmp):
    mirror = in_tmp / "mirror" / "multi30k"
    write_bytes(mirror / "val.de", lf_text(["eins"]))
    write_bytes(mirror / "val.en", b"")
    assert_clean_failure(nmt(*download_val(mirror)), f"{mirror / 'val.en'} is empty")
    assert files_under(in_tmp / "data") == []


def test_utf16_file_is_named_as_utf16(nmt, in_tmp):
    src = write_bytes(in_tmp / "a.de", "Hallo\nWelt\n".encode("utf-16"))  # with a BOM
    tgt = write_bytes(in_tmp / "a.en", lf_text(["Hello", "world"]))
    assert_clean_failure(
        register(nmt, "mine", src, tgt),
        "a.de: line 1 is not valid UTF-8",
        "UTF-16",
        "convert it to UTF-8",
    )
    assert files_under(in_tmp / "data") == []


def test_cr_only_line_ends_are_refused(nmt, in_tmp):
    """Classic Mac files read as one line; aligning them would pair a whole file with another."""
    src = write_bytes(in_tmp / "a.de", b"Hallo\rWelt\r")
    tgt = write_bytes(in_tmp / "a.en", b"Hello\rworld\r")
    assert_clean_failure(register(nmt, "mine", src, tgt), "a.de", "CR", "line ends")
    assert files_under(in_tmp / "data") == []


def test_corpus_of_blank_lines_is_filtered_empty_and_leaves_nothing(nmt, in_tmp):
    """Found broken: the cleaned train files were left in runs/f/data/."""
    src = write_bytes(in_tmp / "a.de", b"\n \n\t\n")
    tgt = write_bytes(in_tmp / "a.en", b"\n\n\n")
    assert register(nmt, "blank", src, tgt).returncode == 0
    assert register(nmt, "blank", src, tgt, split="val").returncode == 0
    result = nmt("prepare", config(in_tmp / "c.yaml", "blank"))
    assert_clean_failure(
        result,
        "every training pair was filtered out",
        "3 read",
        "empty 3",
        "data.max_chars",
    )
    assert files_under(in_tmp / "runs") == []


def test_failed_prepare_keeps_the_previous_prepared_data(nmt, in_tmp, corpus_slice):
    """Found broken: prepare.json was deleted and the cleaned text replaced before the
    failure, so a good prepared run was lost to a bad re-prepare."""
    multi30k = corpus_slice / "multi30k"
    for split, n in (("train", 200), ("val", 20)):
        src, tgt = (
            write_bytes(in_tmp / f"{split}.{lang}", lf_text(head(multi30k / f"{split}.{lang}", n)))
            for lang in ("de", "en")
        )
        assert register(nmt, "real", src, tgt, split=split).returncode == 0
    cfg = config(in_tmp / "c.yaml", "real", vocab_size=400)
    assert nmt("prepare", cfg).returncode == 0
    out = in_tmp / "runs" / "f" / "data"
    before = {name: (out / name).read_bytes() for name in files_under(out)}
    for name in ("train.de", "train.en"):
        (in_tmp / "data" / "real" / name).write_bytes(b"")  # both raw files emptied
    assert_clean_failure(nmt("prepare", cfg), "corpus is empty", "train.de", "train.en")
    assert {name: (out / name).read_bytes() for name in files_under(out)} == before
    expected = ["f/config.yaml", *(f"f/data/{name}" for name in before)]
    assert files_under(in_tmp / "runs") == sorted(expected)


# --------------------------------------------------------------------------- files (issue 15)


def gzipped(lines: list[str]) -> bytes:
    import gzip

    return gzip.compress(lf_text(lines), mtime=0)


def corrupt_deflate(data: bytes) -> bytes:
    """The same gzip member with bytes of its deflate stream flipped: the header is valid,
    so only decompressing finds out (zlib.error, not gzip.BadGzipFile)."""
    broken = bytearray(data)
    for i in range(20, 40):
        broken[i] ^= 0xFF
    return bytes(broken)


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (corrupt_deflate, "Error -3 while decompressing data"),
        (lambda data: data[: len(data) // 2], "Compressed file ended before the end-of-stream"),
        (lambda data: b"plain text\n", "Not a gzipped file"),
    ],
    ids=["corrupt deflate data", "cut short", "not gzip at all"],
)
def test_a_broken_gzip_mirror_file_is_named(nmt, in_tmp, damage, fragment):
    """Found broken: corrupt deflate data raised zlib.error, a traceback."""
    mirror = in_tmp / "mirror" / "multi30k"
    lines = [f"Zeile {i} mit etwas Text" for i in range(2000)]
    write_bytes(mirror / "val.de.gz", damage(gzipped(lines)))
    write_bytes(mirror / "val.en", lf_text([f"line {i}" for i in range(2000)]))
    result = nmt(*download_val(mirror))
    assert_clean_failure(result, f"{mirror / 'val.de.gz'}: cannot read after line", fragment)
    assert files_under(in_tmp / "data") == []


@pytest.mark.parametrize(
    "option, value",
    [
        ("--src-lang", "../x"),
        ("--src-lang", "de/en"),
        ("--tgt-lang", ""),
        ("--tgt-lang", "e\x01n"),
        ("--split", "../../train"),
        ("--split", "."),
    ],
)
def test_names_that_are_no_file_names_are_refused_by_download(nmt, in_tmp, option, value):
    """Found broken: `--src-lang ../x` wrote data/x.x outside the corpus directory."""
    src = write_bytes(in_tmp / "a.de", lf_text(["Hallo"]))
    tgt = write_bytes(in_tmp / "a.en", lf_text(["Hello"]))
    args = {"--src-lang": "de", "--tgt-lang": "en", "--split": "train", option: value}
    result = nmt("download", "mine", "--src", src, "--tgt", tgt, *sum(args.items(), ()))
    assert_clean_failure(result, f"{option}: {value!r} is not allowed; expected a name of 1 to")
    assert sorted(p.name for p in in_tmp.iterdir()) == ["a.de", "a.en"]


@pytest.mark.parametrize("langs", ["de,../en", "de,en/x"])
def test_language_lists_with_paths_are_refused(nmt, in_tmp, langs):
    result = nmt("download", "multi30k", "--langs", langs, "--mirror", in_tmp)
    assert_clean_failure(result, "language: ", "is not allowed")
    assert list(in_tmp.iterdir()) == []


@pytest.mark.parametrize("corpus", ["..", "."])
def test_a_corpus_name_that_is_no_directory_is_refused(nmt, in_tmp, corpus):
    src = write_bytes(in_tmp / "a.de", lf_text(["Hallo"]))
    tgt = write_bytes(in_tmp / "a.en", lf_text(["Hello"]))
    result = register(nmt, corpus, src, tgt)
    assert_clean_failure(result, f"corpus name {corpus!r} cannot name a directory")
    assert sorted(p.name for p in in_tmp.iterdir()) == ["a.de", "a.en"]


def test_a_data_dir_that_is_a_file_is_refused_by_download_and_prepare(nmt, in_tmp):
    src = write_bytes(in_tmp / "a.de", lf_text(["Hallo"]))
    tgt = write_bytes(in_tmp / "a.en", lf_text(["Hello"]))
    write_bytes(in_tmp / "plain.txt", b"not a directory\n")
    result = nmt(
        *("download", "mine", "--src", src, "--tgt", tgt, "--src-lang", "de"),
        *("--tgt-lang", "en", "--data-dir", "plain.txt"),
    )
    assert_clean_failure(result, "plain.txt is not a directory (data directory plain.txt)")
    cfg = config(in_tmp / "c.yaml", "mine", data_dir="plain.txt/sub")
    assert_clean_failure(nmt("prepare", cfg), "plain.txt is not a directory")
    assert (in_tmp / "plain.txt").read_bytes() == b"not a directory\n"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["a.de", "a.en", "c.yaml", "plain.txt"]


MALFORMED_MANIFESTS = {
    "not JSON": b'{"files": {"val.de": ',
    "not UTF-8": b'{"files": {"val.\xff": 1}}',
    "a list": b"[1, 2, 3]",
    "files is a list": b'{"files": ["val.de", "val.en"]}',
    "entries of the wrong shape": json.dumps(
        {
            "files": {
                "val.de": "abc",
                "val.en": {"lines": "2", "sha256": 5, "source": None},
            }
        }
    ).encode(),
    "missing keys": b'{"files": {"val.de": {}, "val.en": {"lines": 2}}}',
}


@pytest.mark.parametrize("case", list(MALFORMED_MANIFESTS))
def test_a_malformed_manifest_means_fetching_again(nmt, in_tmp, case):
    """Found broken: a manifest of the wrong shape gave a traceback; it should only mean
    "re-fetch", as a missing one does."""
    mirror = in_tmp / "mirror" / "multi30k"
    write_bytes(mirror / "val.de", lf_text(["eins", "zwei"]))
    write_bytes(mirror / "val.en", lf_text(["one", "two"]))
    write_bytes(in_tmp / "data" / "multi30k" / "manifest.json", MALFORMED_MANIFESTS[case])
    result = nmt(*download_val(mirror))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("note: ") == 1 and "fetching" in result.stderr  # once, not twice
    assert "2 files written" in result.stdout
    manifest = json.loads((in_tmp / "data" / "multi30k" / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["val.de", "val.en"]
    assert manifest["files"]["val.en"]["lines"] == 2
    again = nmt(*download_val(mirror))  # now intact: nothing to do
    assert again.returncode == 0 and "already present" in again.stdout


# --------------------------------------------------------------------------- damaged arrays

# (how the prepared arrays of one side are damaged, what the error says). Found broken:
# each passed loading and surfaced later in training as a traceback (a ValueError from
# batching, a TypeError from boolean indexing, an IndexError from the embedding).
DAMAGED_ARRAYS = {
    "id beyond the vocabulary": (
        lambda ids, offsets: (np.where(np.arange(len(ids)) == 5, 60000, ids), offsets),
        "an id is 60000, beyond the vocabulary (1000 pieces)",
    ),
    "offsets decrease": (
        lambda ids, offsets: (ids, np.where(np.arange(len(offsets)) == 3, offsets[5], offsets)),
        "offsets decrease",
    ),
    "offsets shifted": (lambda ids, offsets: (ids, offsets + 1), "offsets run from 1 to"),
    "ids 2-D": (lambda ids, offsets: (ids[:, None], offsets), "expected a 1-D integer array"),
    "ids float": (
        lambda ids, offsets: (ids.astype(np.float64), offsets),
        "ids are float64 of shape",
    ),
    "ids negative": (
        lambda ids, offsets: (ids.astype(np.int32) - 2000, offsets),
        "an id is negative",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_ARRAYS))
def test_damaged_prepared_arrays_are_refused_on_load(tmp_path: Path, case):
    from nmt.data.binarize import TokenArray, write_token_array
    from nmt.errors import DataError

    stem = tmp_path / "val.de"
    write_token_array(stem, ([i % 997 + 3] * (i % 7 + 1) for i in range(40)), vocab_size=1000)
    assert len(TokenArray(stem, vocab_size=1000)) == 40  # the undamaged arrays load
    damage, message = DAMAGED_ARRAYS[case]
    ids, offsets = damage(np.load(f"{stem}.ids.npy"), np.load(f"{stem}.offsets.npy"))
    np.save(f"{stem}.ids.npy", ids)
    np.save(f"{stem}.offsets.npy", offsets)
    with pytest.raises(DataError, match="corrupt prepared data") as caught:
        TokenArray(stem, vocab_size=1000)
    assert message in str(caught.value) and "nmt prepare --force" in str(caught.value)
