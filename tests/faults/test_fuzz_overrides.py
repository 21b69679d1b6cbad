"""Random dotted overrides thrown at the CLI's config loading, checked with hypothesis.

Keys: every known key, unknown keys, sections, keys below a setting. Values: integers (huge
ones and a 5000-digit one included), floats (NaN, infinities), strings (path-like, unicode,
control characters), lists, mappings, booleans, null, YAML's special forms (aliases, tags,
dates, octal and hex, document markers). `nmt prepare` runs in this process on a tiny config
whose corpus is missing: every run must end with exit code 2 and exactly one `error:`
message, never an exception, never a file written. A config that passes validation is then
built as a model on the meta device (no memory): what validation accepts must construct.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nmt.config import SECTIONS, ConfigError, load_config
from nmt.data.tokenizer import PAD_ID
from nmt.model.transformer import Transformer

KNOWN_KEYS = [
    f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
] + ["name", "run_dir"]
SPECIAL = [
    *("&a [1, *a]", "*a", "&x 3", "[&b 1, *b]", "{a: &c 1, b: *c}", "<<: *d"),
    *("!!python/object/apply:os.system [echo]", "!!int abc", "!!float x", "!!bool maybe"),
    *("!!binary ===", "!!timestamp x", "!!set {a}", "!!omap [a]", "!!str 1"),
    *(".nan", ".NaN", ".inf", "-.inf", "1e400", "-1e400", "0x1F", "0o17", "017", "1_000"),
    *("2001-13-01", "2024-01-01", "12:30:00", "yes", "no", "on", "off", "~", "null", "true"),
    *("'quoted'", '"a\\x00b"', "|", ">", "- a", "[", "{", "}", "%YAML 1.1", "---", "..."),
    *("a: b", "a=b", "", " ", "\t", "9" * 5000, "-" + "9" * 30, "1" + "0" * 19, "4294967296"),
    *("cpu", "cuda:0", "meta", "mps", "cpu:1", "auto", "../x", "de/en", "/", ".", "..", "€"),
    *("tiny", "big", "fp32", "bf16", "int8", "bpe", "[0.9, 1.0]", "[]", "{}", "[[[[1]]]]"),
]
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 7, 8, 2**31, 2**32 - 1, 2**63, 1024, 1 << 20]),
)
values = st.one_of(
    numbers.map(repr),
    st.sampled_from(SPECIAL),
    st.text(max_size=12),
    st.lists(st.one_of(numbers, st.text(max_size=4)), max_size=3).map(str),
    st.dictionaries(st.text(max_size=4), numbers, max_size=2).map(str),
)
keys = st.one_of(
    st.sampled_from(KNOWN_KEYS),
    st.sampled_from(KNOWN_KEYS).map(lambda k: k + ".x"),
    st.sampled_from([*SECTIONS, "x", "model.nope", "a.b.c.d", "train.lr.value"]),
    st.text(alphabet="abcdefghij._", min_size=1, max_size=12),
)
overrides = st.lists(
    st.one_of(st.tuples(keys, values).map("=".join), st.text(max_size=10)), max_size=4
)

TINY = """name: fuzz
data:
  corpus: absent
  vocab_size: 100
  test_splits: []
model:
  preset: tiny
train:
  device: cpu
"""


@pytest.fixture
def workdir(in_tmp) -> Path:
    (in_tmp / "c.yaml").write_text(TINY, encoding="utf-8")
    return in_tmp


@settings(
    max_examples=int(os.environ.get("NMT_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(items=overrides)
@example(items=["model.preset=[1]"])
@example(items=["train.adam_betas=[0.9, 1.0]", "train.seed=-1"])
@example(items=["data.src_lang=../x", "train.lr=" + "9" * 5000])
@example(items=["model.d_model=65536", "model.ffn_dim=1048576", "model.encoder_layers=1000"])
@example(items=["train.device=meta", "decode.length_penalty=.nan"])
@example(items=["model.d_model=1024", "model.heads=16", "data.vocab_size=1000000"])
def test_random_overrides_work_or_fail_with_one_error(cli_inline, workdir, items):
    before = sorted(p.name for p in workdir.iterdir())
    result = cli_inline("prepare", "c.yaml", "--", *items)  # "-0" is an override here
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (items, result.returncode, result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("error: ") == 1, result.stderr
    assert sorted(p.name for p in workdir.iterdir()) == before  # nothing written
    if "invalid configuration" not in result.stderr:  # valid: only the corpus is missing
        assert "corpus file not found" in result.stderr, result.stderr
        _build_on_meta(workdir / "c.yaml", items)


def _build_on_meta(config: Path, items: list[str]) -> None:
    """The model a valid config describes, built without memory: shapes must all work."""
    cfg = load_config(config, items)
    with torch.device("meta"):
        vocab = cfg.data.vocab_size
        model = Transformer(cfg.model, src_vocab_size=vocab, tgt_vocab_size=vocab, pad_id=PAD_ID)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_the_keys_cover_every_setting():
    """Every dataclass field is a key the fuzz test draws (new settings get fuzzed too)."""
    assert len(KNOWN_KEYS) == sum(len(dataclasses.fields(c)) for c in SECTIONS.values()) + 2
    assert typing.get_type_hints(SECTIONS["train"])["seed"] is int
    with pytest.raises(ConfigError):
        load_config(None, ["train.seed=-1"])


yaml_files = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(SPECIAL), max_size=6).map("\n".join),
    st.tuples(st.sampled_from(KNOWN_KEYS), values).map(
        lambda kv: (
            "{}:\n  {}: {}\n".format(*kv[0].split(".", 1), kv[1])
            if "." in kv[0]
            else f"{kv[0]}: {kv[1]}\n"
        )
    ),
)


@settings(
    max_examples=int(os.environ.get("NMT_FUZZ_EXAMPLES", "150")) // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=yaml_files)
def test_random_config_files_work_or_fail_with_one_error(cli_inline, in_tmp, text):
    (in_tmp / "x.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    result = cli_inline("prepare", "x.yaml")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (text, result.returncode, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("error: ") == 1
    assert sorted(p.name for p in in_tmp.iterdir()) == ["x.yaml"]
