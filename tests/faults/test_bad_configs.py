"""Bad configurations given to the real CLI: broken YAML, unknown or mistyped keys, bad values
and overrides, and settings that only the corpus can refute (the vocabulary size).

Each one gives a single `error: invalid configuration in <file>:` message that lists every
problem with its dotted key and what is allowed, exit code 2, and no traceback. A problem
that comes from a command-line override says so, because the YAML file does not have the
key. The cases run in this process (typer's CliRunner); one runs the real entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _cli import assert_clean_failure

from nmt.data.tokenizer import Tokenizer

# Nine levels of nine aliases: 342 bytes that a plain PyYAML load, then a copy, expands to
# 9**9 strings (the bomb was 438 bytes).
BILLION_LAUGHS = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


# name -> (config file text, overrides, fragments the message must hold)
BAD_CONFIGS: dict[str, tuple[str | bytes, list[str], list[str]]] = {
    "tab indentation": (
        "train:\n\tlr: 1\n",
        [],
        ["malformed YAML at line 2, column 1", "'\\t' that cannot start any token"],
    ),
    "duplicate key": (
        "train:\n  lr: 0.001\n  lr: 0.002\n",
        [],
        ["line 3, column 3: duplicate key 'lr' (first on line 2)"],
    ),
    "duplicate section": (
        "train:\n  lr: 0.001\nmodel:\n  heads: 4\ntrain:\n  seed: 3\n",
        [],
        ["line 5, column 1: duplicate key 'train' (first on line 1)"],
    ),
    "python tag": (
        "name: !!python/object/apply:os.system [echo hi]\n",
        [],
        ["malformed YAML at line 1, column 7", "could not determine a constructor"],
    ),
    "not UTF-8": (b"name: caf\xe9\n", [], ["config file is not valid UTF-8 (byte 9)"]),
    "unknown section": (
        "optimizer:\n  lr: 0.001\n",
        [],
        ["optimizer: unknown key", "(valid keys: name, run_dir, data, model, train, decode, eval)"],
    ),
    "unknown nested key": (
        "data:\n  vocab: 8000\n",
        [],
        ["data.vocab: unknown key; did you mean data.vocab_size?"],
    ),
    "a level too deep": (
        "train:\n  lr:\n    value: 0.001\n",
        [],
        ["train.lr: got {'value': 0.001} (dict), expected a number"],
    ),
    "section given a scalar": (
        "model: big\n",
        [],
        ["model: expected a mapping, got 'big' (str)"],
    ),
    "wrong types": (
        "model:\n  heads: four\ntrain:\n  compile: 'yes'\n  adam_betas: [0.9]\n"
        "data:\n  test_splits: 3\n",
        [],
        [
            "model.heads: got 'four' (str), expected an integer",
            "train.compile: got 'yes' (str), expected true or false",
            "train.adam_betas: got [0.9] (list), expected a list of 2 numbers",
            "data.test_splits: got 3 (int), expected a list of strings",
        ],
    ),
    "not a number": (
        "train:\n  lr: .nan\n",
        [],
        ["train.lr: got nan (float), expected a finite number"],
    ),
    "infinity": (
        "train:\n  max_minutes: .inf\n",
        [],
        ["train.max_minutes: got inf (float), expected a finite number"],
    ),
    "negative sizes": (
        "model:\n  d_model: -512\ntrain:\n  max_tokens: 0\ndata:\n  vocab_size: -1\n",
        [],
        [
            "model.d_model: -512 is out of range; allowed >= 1",
            "train.max_tokens: 0 is out of range; allowed >= 1",
            "data.vocab_size: -1 is out of range; allowed >= 8",
        ],
    ),
    "d_model not divisible by heads": (
        "model:\n  d_model: 100\n  heads: 3\n",
        [],
        ["model.d_model (100) must be divisible by model.heads (3)"],
    ),
    "override of a missing key": (
        "name: ok\n",
        ["model.nope=3"],
        ["model.nope: unknown key", "valid keys: preset, d_model", "(command-line override)"],
    ),
    "override of a missing section": (
        "name: ok\n",
        ["nope.x=1"],
        ["nope: unknown key", "(command-line override)"],
    ),
    "override without =": (
        "name: ok\n",
        ["model.d_model"],
        ["override 'model.d_model' must look like section.key=value"],
    ),
    "override with an empty key part": (
        "name: ok\n",
        ["model..d_model=3"],
        ["override 'model..d_model=3' must look like section.key=value"],
    ),
    "override of the wrong type": (
        "name: ok\n",
        ["model.d_model=abc"],
        ["model.d_model: got 'abc' (str), expected an integer (command-line override)"],
    ),
    "override with NaN": (
        "name: ok\n",
        ["train.lr=nan"],
        ["train.lr: got 'nan' (str), expected a finite number (command-line override)"],
    ),
    # Inputs that passed validation and crashed later, or exhausted the machine (issue 15).
    "alias bomb": (
        BILLION_LAUGHS,
        [],
        ["malformed YAML at line 2, column 8: alias *a is not allowed: write the value out"],
    ),
    "alias in an override": (
        "name: ok\n",
        ["train.adam_betas=[&b 0.9, *b]"],
        ["override train.adam_betas: alias *b is not allowed"],
    ),
    "5000-digit integer": (
        "train:\n  seed: " + "9" * 5000 + "\n",
        [],
        ["line 2, column 9: an integer of 5000 digits; at most 40 are read"],
    ),
    "nesting too deep": ("a: " + "[" * 100 + "]" * 100 + "\n", [], ["nested more than 32 levels"]),
    "a tag no constructor can build": (
        "train:\n  seed: !!int abc\n  lr: !!bool maybe\n",
        [],
        ["line 2, column 9: cannot read 'abc' as tag:yaml.org,2002:int"],
    ),
    "an impossible date is text": (
        "train:\n  seed: 2001-13-01\n",
        [],
        ["train.seed: got '2001-13-01' (str), expected an integer"],
    ),
    "a list where a name is expected": (
        "name: ok\n",
        ["model.preset=[1]", "data.corpus={a: 1}", "train.precision=[fp32]"],
        [
            "model.preset: got [1] (list), expected a string or null",
            "data.corpus: got {'a': 1} (dict), expected a string",
            "train.precision: got ['fp32'] (list), expected one of 'auto'",
        ],
    ),
    "adam betas outside [0, 1)": (
        "train:\n  adam_betas: [1.0, -0.1]\n",
        [],
        [
            "train.adam_betas[0]: 1.0 is out of range; allowed >= 0 and < 1",
            "train.adam_betas[1]: -0.1 is out of range; allowed >= 0 and < 1",
        ],
    ),
    "devices torch names but nmt cannot use": (
        "train:\n  device: meta\n",
        [],
        ["train.device: got 'meta' (str), expected auto, cpu, cuda or cuda:N"],
    ),
    "seeds outside numpy's range": (
        "train:\n  seed: 4294967296\n",
        [],
        ["train.seed: 4294967296 is out of range; allowed >= 0 and <= 4294967295"],
    ),
    "sizes no machine holds": (
        "data:\n  vocab_size: 100000000\nmodel:\n  max_positions: 1000000000\n"
        "train:\n  threads: 100000\n  max_updates: 100000000000000000000\n",
        [],
        [
            "data.vocab_size: 100000000 is out of range; allowed >= 8 and <= 1000000",
            "model.max_positions: 1000000000 is out of range; allowed >= 1 and <= 1048576",
            "train.threads: 100000 is out of range; allowed >= 0 and <= 1024",
            "train.max_updates: 100000000000000000000 is out of range; allowed >= 1 and "
            "<= 9223372036854775807",
        ],
    ),
    "a model larger than the machine's memory": (
        "model:\n  d_model: 65536\n  ffn_dim: 1048576\n  encoder_layers: 1000\n",
        [],
        ["model sizes (d_model 65536, ffn_dim 1048576, 1000+3 layers", "GiB of memory"],
    ),
    "a batch whose logits exceed the machine's memory": (
        "data:\n  vocab_size: 1000000\ntrain:\n  max_tokens: 16000000\n",
        [],
        ["train.max_tokens (16000000) x data.vocab_size (1000000) float32 logits of one batch"],
    ),
    "names that are no file names": (
        "data:\n  src_lang: ../x\n  tgt_lang: de/en\n  test_splits: ['']\n",
        ["name=a\x00b"],
        [
            "data.src_lang: got '../x' (str), expected a name of 1 to 64 letters, digits",
            "data.tgt_lang: got 'de/en' (str)",
            "data.test_splits: got [''] (list), expected a list of strings, each a name",
            "name: got 'a\\x00b' (str)",
        ],
    ),
    "a negative length penalty": (
        "decode:\n  length_penalty: -1\n",
        [],
        ["decode.length_penalty: -1.0 is out of range; allowed >= 0"],
    ),
}


@pytest.fixture
def nmt(in_tmp, cli_inline):
    """`nmt(*args)`: the CLI in this process (`cli_inline`), cwd = the test's empty tmp dir."""
    return cli_inline


def write_config(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_gives_one_clear_message(case, nmt, in_tmp):
    text, overrides, fragments = BAD_CONFIGS[case]
    config = write_config(in_tmp / "x.yaml", text)
    result = nmt("prepare", config, *overrides)
    assert_clean_failure(result, "invalid configuration in ", *fragments)
    assert sorted(p.name for p in in_tmp.iterdir()) == ["x.yaml"]  # nothing else written


def test_config_that_is_a_directory(nmt, in_tmp):
    (in_tmp / "x.yaml").mkdir()
    assert_clean_failure(nmt("prepare", "x.yaml"), "x.yaml", "cannot read config file")


def test_missing_mirror_directory_named_by_the_config(nmt, in_tmp):
    """`nmt run` logs what it starts to download, then fails with the one error line."""
    write_config(in_tmp / "x.yaml", "data:\n  mirror: no/such/dir\n")
    result = nmt("run", "x.yaml")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == "error: mirror directory not found: no/such/dir"
    assert result.stderr.count("error: ") == 1
    assert sorted(p.name for p in in_tmp.iterdir()) == ["x.yaml"]


def test_every_problem_of_a_file_at_once_from_the_real_entry_point(in_tmp):
    """`python -m nmt.cli`: exit code 2, the file named once, one line per problem."""
    config = write_config(
        in_tmp / "x.yaml", "model:\n  heads: four\ntrain:\n  lr: .inf\n  lrr: 1\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "nmt.cli", "train", str(config), "decode.beam=2"],
        cwd=in_tmp,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert_clean_failure(result)
    assert result.stderr.splitlines() == [
        f"error: invalid configuration in {config}:",
        "  - model.heads: got 'four' (str), expected an integer",
        "  - train.lrr: unknown key; did you mean train.lr? (valid keys: "
        + ", ".join(KEYS_OF_TRAIN)
        + ")",
        "  - train.lr: got inf (float), expected a finite number",
        "  - decode.beam: unknown key; did you mean decode.beam_size? (valid keys: "
        + "beam_size, n_best, length_penalty, max_len_a, max_len_b, min_len, batch_tokens, "
        + "max_input_tokens, quantize, precision) (command-line override)",
    ]
    assert result.stdout == ""


KEYS_OF_TRAIN = [
    *("seed", "device", "precision", "compile", "threads", "max_tokens", "update_freq"),
    *("max_updates", "max_epochs", "max_minutes", "lr", "warmup_updates", "warmup_init_lr"),
    *("adam_betas", "adam_eps", "weight_decay", "clip_norm", "label_smoothing", "log_every"),
    *("valid_every", "save_every", "keep_last", "valid_bleu", "valid_bleu_beam"),
    *("valid_bleu_max_sentences", "best_metric", "patience", "max_nonfinite_in_row"),
    *("average_last", "tensorboard", "init_from"),
]


# --------------------------------------------------------------------------- vocabulary


@pytest.fixture
def small_corpus(nmt, in_tmp, corpus_slice) -> Path:
    """200 training and 20 dev pairs of Multi30k registered as corpus `m`; a config for it."""
    for split, n in (("train", 200), ("val", 20)):
        files = []
        for lang in ("de", "en"):
            with open(corpus_slice / "multi30k" / f"{split}.{lang}", encoding="utf-8") as f:
                lines = [next(f) for _ in range(n)]
            files.append(in_tmp / f"{split}.{lang}")
            files[-1].write_text("".join(lines), encoding="utf-8")
        result = nmt(
            *("download", "m", "--src", files[0], "--tgt", files[1]),
            *("--src-lang", "de", "--tgt-lang", "en", "--split", split),
        )
        assert result.returncode == 0, result.stderr
    body = {"name": "v", "data": {"corpus": "m", "test_splits": []}, "model": {"preset": "tiny"}}
    return write_config(in_tmp / "v.yaml", json.dumps(body))


def test_vocabulary_larger_than_the_corpus_supports(nmt, in_tmp, small_corpus):
    """Found broken: the cleaned training text was left in runs/v/data/ after the error."""
    result = nmt("prepare", small_corpus, "data.vocab_size=60000")
    assert_clean_failure(
        result,
        "invalid configuration",
        "data.vocab_size: 60000 is more than the training text supports; use a value <= ",
    )
    assert not (in_tmp / "runs").exists()


def test_switching_to_separate_vocabularies_leaves_no_stale_joint_model(nmt, in_tmp, small_corpus):
    """Found broken: the old joint spm.model stayed beside the new spm.src/tgt.model, and
    Tokenizer.load (the trainer's) preferred it: ids and vocabulary no longer matched."""
    assert nmt("prepare", small_corpus, "data.vocab_size=400").returncode == 0
    separate = ["data.vocab_size=350", "data.joint_vocab=false", "model.share_embeddings=false"]
    result = nmt("prepare", small_corpus, *separate)
    assert result.returncode == 0, result.stderr
    out = in_tmp / "runs" / "v" / "data"
    assert not (out / "spm.model").exists()
    tokenizer = Tokenizer.load(out)
    assert not tokenizer.joint and tokenizer.src_vocab_size == 350


def test_half_precision_decoding_on_the_cpu_is_refused_before_training(nmt, in_tmp):
    """decode.precision bf16 cannot decode the test sets on a CPU: `nmt train` says so at
    once, not after training (nothing prepared is needed to find out)."""
    config = write_config(in_tmp / "x.yaml", "train:\n  device: cpu\n")
    result = nmt("train", config, "decode.precision=bf16")
    assert_clean_failure(result, "decode.precision bf16 needs a GPU; use fp32 or auto on CPU")
    assert sorted(p.name for p in in_tmp.iterdir()) == ["x.yaml"]  # nothing written


@pytest.mark.parametrize("source", ["/dev/zero", "big.yaml"])
def test_a_config_too_large_to_be_one_is_refused_unread(nmt, in_tmp, source):
    """Found broken: the whole file was read first (/dev/zero never ends)."""
    if source == "big.yaml":
        write_config(in_tmp / "big.yaml", "name: x\n" + "# padding\n" * 120_000)
    result = nmt("prepare", source)
    assert_clean_failure(result, f"invalid configuration in {source}:", "larger than 1024 KiB")
