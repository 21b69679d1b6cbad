"""The command line used wrongly: missing arguments, files that are not checkpoints, and
`evaluate` given missing, empty or mismatched files.

Each mistake gives one message that names the file and what was expected, a non-zero exit
code, no traceback, and no output file (not even a temporary one). Most cases run the CLI
in this process (typer's CliRunner). The real `python -m nmt.cli` entry point runs for a
few of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu
from _cli import assert_clean_failure, run_process

REPO = Path(__file__).resolve().parents[2]
TINY_YAML = REPO / "configs" / "tiny.yaml"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def nmt(in_tmp, cli_inline):
    """`nmt(*args)`: the CLI in this process (`cli_inline`), cwd = the test's empty tmp dir."""
    return cli_inline


def write_lines(path: Path, lines: list[str], ending: str = "\n") -> Path:
    path.write_bytes("".join(line + ending for line in lines).encode("utf-8"))
    return path


def files_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["download"], ["Missing argument 'CORPUS'"]),
        (["prepare"], ["Missing argument 'CONFIG'"]),
        (["train"], ["Missing argument 'CONFIG'"]),
        (["run"], ["Missing argument 'CONFIG'"]),
        (["translate"], ["Missing argument 'MODEL'"]),
        (["export", "x.pt", "-o", "out", "--to", "onnx"], ["Invalid value for '--to'"]),
        (["export", "x.pt", "-o", "o", "--to", "ctranslate2", "--quantize", "int4"], ["'int4'"]),
        (["plot"], ["Missing argument 'RUN_DIR'"]),
        (["translate", "x.pt", "--beam-size"], ["'--beam-size' requires an"]),
        (["translate", "x.pt", "--beam-size", "0"], ["--beam-size: 0 is out of range"]),
        (["translate", "x.pt", "--beam-size", "five"], ["Invalid value for '--beam-size'"]),
        (["trian", "c.yaml"], ["No such command 'trian'"]),
        (["prepare", "c.yaml", "--bogus"], ["No such option: --bogus"]),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(nmt, args, fragments):
    """Click's own usage errors (typer draws them in a box): exit code 2, no traceback."""
    result = nmt(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    text = unboxed(result.stderr).upper()
    for fragment in fragments:
        assert fragment.upper() in text, result.stderr


def unboxed(text: str) -> str:
    """The words of a message that rich may have drawn in a box and wrapped."""
    return " ".join(text.translate(str.maketrans("", "", "│╭╮╰╯─")).split())


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["evaluate"], "give a CHECKPOINT to translate with, or --hyp FILE --ref FILE"),
        (["evaluate", "--hyp", "h.en"], "--hyp needs --ref"),
        (["download", "mine", "--src", "a.de"], "give both --src and --tgt"),
        (["download", "multi30k", "--langs", "de,en", "--pair", "de-en"], "not both"),
    ],
)
def test_incomplete_option_sets_are_named(nmt, args, fragment):
    assert_clean_failure(nmt(*args), fragment)


# --------------------------------------------------------------------------- not checkpoints

NOT_CHECKPOINTS = {  # file name -> (content, what the message calls it)
    "tiny.yaml": (TINY_YAML.read_bytes(), "tiny.yaml is not a checkpoint but a YAML config"),
    "config.pt": (b"name: x\nmodel:\n  preset: tiny\n", "config.pt is not a checkpoint but a YAML"),
    "notes.pt": (
        "Ein Hund läuft.\nA dog runs.\n".encode(),
        "notes.pt is not a checkpoint but a text",
    ),
    "random.pt": (bytes(range(1, 256)) * 8, "random.pt is not a checkpoint"),
    "empty.pt": (b"", "empty.pt is truncated or corrupt (the file is empty)"),
}
COMMANDS = {  # how each command takes a checkpoint; OUT is the file it must not write
    "translate": ["translate", "CKPT", "-i", "in.de", "-o", "OUT"],
    "evaluate": ["evaluate", "CKPT", "--src", "in.de", "--ref", "in.de", "--output", "OUT"],
    "average": ["average", "CKPT", "CKPT", "-o", "OUT"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("name", list(NOT_CHECKPOINTS))
def test_a_file_that_is_not_a_checkpoint_is_named_as_such(nmt, in_tmp, command, name):
    """Found broken: `average` called a YAML config, a text file or random bytes 'not plain
    data' that it refused to run as code, and `translate` did not say what it got."""
    content, fragment = NOT_CHECKPOINTS[name]
    (in_tmp / name).write_bytes(content)
    write_lines(in_tmp / "in.de", ["Ein Hund ."])
    args = [{"CKPT": name, "OUT": "out"}.get(a, a) for a in COMMANDS[command]]
    result = nmt(*args)
    assert_clean_failure(result, fragment)
    if content:
        assert "give a .pt checkpoint written by nmt train" in result.stderr
    assert sorted(p.name for p in in_tmp.iterdir()) == sorted([name, "in.de"])


@pytest.mark.parametrize("command", ["evaluate", "average"])
def test_a_missing_checkpoint_is_named(nmt, in_tmp, command):
    write_lines(in_tmp / "in.de", ["Ein Hund ."])
    args = [{"CKPT": "gone.pt", "OUT": "out"}.get(a, a) for a in COMMANDS[command]]
    assert_clean_failure(nmt(*args), "checkpoint not found: gone.pt")
    assert files_in(in_tmp) == ["in.de"]


def test_a_yaml_config_for_average_from_the_real_entry_point(in_tmp):
    result = run_process("average", TINY_YAML, "-o", "avg.pt", cwd=in_tmp)
    assert_clean_failure(result, f"{TINY_YAML} is not a checkpoint but a YAML config")
    assert files_in(in_tmp) == []


# --------------------------------------------------------------------------- evaluate files

REFS = ["A dog runs in the park .", "Two men ride bikes .", "A woman reads a book ."]
HYPS = ["A dog runs in a park .", "Two men are riding bikes .", "A woman reads ."]


def test_empty_hypothesis_and_reference_from_the_real_entry_point(in_tmp):
    """Found broken: sacreBLEU's IndexError escaped as a traceback (exit code 1)."""
    (in_tmp / "hyp.en").write_bytes(b"")
    (in_tmp / "ref.en").write_bytes(b"")
    result = run_process("evaluate", "--hyp", "hyp.en", "--ref", "ref.en", cwd=in_tmp)
    assert_clean_failure(result, "nothing to score", "hyp.en", "ref.en", "no lines")


@pytest.mark.parametrize(
    "hyp, ref, fragment",
    [
        ("missing.en", "ref.en", "file not found: missing.en"),
        ("hyp.en", "missing.en", "file not found: missing.en"),
        ("latin1.en", "ref.en", "latin1.en: line 2 is not valid UTF-8"),
        ("hyp.en", "adir", "expected a file but found a directory: adir"),
    ],
)
def test_evaluate_names_the_bad_file(nmt, in_tmp, hyp, ref, fragment):
    write_lines(in_tmp / "hyp.en", HYPS)
    write_lines(in_tmp / "ref.en", REFS)
    (in_tmp / "latin1.en").write_bytes(b"A dog .\nA caf\xe9 .\nOne .\n")
    (in_tmp / "adir").mkdir()
    assert_clean_failure(nmt("evaluate", "--hyp", hyp, "--ref", ref, "--json"), fragment)


def test_crlf_reference_scores_like_the_lf_one(nmt, in_tmp):
    """A reference saved on Windows is scored as the same text, not as a worse match."""
    write_lines(in_tmp / "hyp.en", HYPS)
    write_lines(in_tmp / "ref.en", REFS, ending="\r\n")
    result = nmt("evaluate", "--hyp", "hyp.en", "--ref", "ref.en", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bleu"]["score"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert report["chrf"]["score"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert report["ter"]["score"] == pytest.approx(sacrebleu.corpus_ter(HYPS, [REFS]).score)


# --------------------------------------------------------------------------- with a model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, corpus_slice) -> Path:
    """A real (if barely trained) checkpoint: 64 Multi30k pairs, tiny model, one update."""
    import torch

    from nmt.config import load_config
    from nmt.data.download import register_files
    from nmt.data.prepare import prepare
    from nmt.runtime import Runtime
    from nmt.training.trainer import Trainer

    root = tmp_path_factory.mktemp("model")
    for split, n in (("train", 64), ("val", 8)):
        files = {}
        for lang in ("de", "en"):
            with open(corpus_slice / "multi30k" / f"{split}.{lang}", encoding="utf-8") as f:
                files[lang] = write_lines(root / f"{split}.{lang}", [next(f) for _ in range(n)])
        register_files(
            "m", src=files["de"], tgt=files["en"], src_lang="de", tgt_lang="en",
            split=split, data_dir=root / "data",
        )  # fmt: skip
    cfg = load_config(
        TINY_YAML,
        [
            *(f"run_dir={root / 'run'}", f"data.data_dir={root / 'data'}", "data.corpus=m"),
            *("data.test_splits=[]", "data.vocab_size=400", "train.device=cpu"),
            *("train.precision=fp32", "train.threads=1", "train.max_tokens=512"),
            *("train.max_updates=1", "train.valid_bleu=false", "train.warmup_updates=1"),
        ],
    )
    prepare(cfg)
    Trainer(cfg, Runtime(torch.device("cpu"), "fp32"), log=lambda message: None).fit()
    return root / "run" / "checkpoints" / "last.pt"


def test_translate_a_missing_input_file_writes_nothing(nmt, in_tmp, checkpoint):
    result = nmt("translate", checkpoint, "-i", "missing.de", "-o", "out.en")
    assert_clean_failure(result, "file not found: missing.de")
    assert files_in(in_tmp) == []


def test_evaluate_source_and_reference_of_different_lengths(nmt, in_tmp, checkpoint):
    write_lines(in_tmp / "src.de", ["Ein Hund .", "Zwei Männer ."])
    write_lines(in_tmp / "ref.en", REFS)
    result = nmt("evaluate", checkpoint, "--src", "src.de", "--ref", "ref.en", "--output", "ev")
    assert_clean_failure(result, "line counts differ: src.de has 2 lines but ref.en has 3")
    assert files_in(in_tmp) == ["ref.en", "src.de"]


def test_evaluate_a_split_the_corpus_lacks(nmt, in_tmp, checkpoint):
    result = nmt("evaluate", checkpoint, "--split", "test_2099", "--output", "ev")
    assert_clean_failure(result, "file not found: ", "test_2099.de")
    assert files_in(in_tmp) == []


# --------------------------------------------------------------------------- names the OS refuses

TOO_LONG = "x" * 300 + ".pt"  # longer than any Linux file system's 255-byte names


@pytest.mark.parametrize(
    "args",
    [
        ("translate", TOO_LONG, "--input", "src.txt"),
        ("evaluate", TOO_LONG, "--src", "src.txt", "--ref", "src.txt"),
        ("average", TOO_LONG, "other.pt", "-o", "avg.pt"),
        ("export", TOO_LONG, "-o", "out", "--to", "ctranslate2"),
    ],
    ids=lambda args: args[0],
)
def test_a_file_name_too_long_for_the_file_system_is_one_error_line(nmt, tmp_path, args):
    write_lines(tmp_path / "src.txt", ["Ein Hund."])
    result = nmt(*args)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == f"error: {TOO_LONG}: File name too long"
    assert files_in(tmp_path) == ["src.txt"]
