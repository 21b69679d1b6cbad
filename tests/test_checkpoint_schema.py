"""A checkpoint is input: plain data with valid checksums can still be the wrong schema.

Every command that reads one (translate, evaluate, average, train's resume) checks it first:
a malformed file ends with one `error:` line naming it, exit 2, no traceback, and nothing
half-written. `nmt average` refuses to mix tokenizers or architectures even where the tensor
shapes agree. The fuzz test at the end throws random mutations of a real checkpoint at
translate, average and resume.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from _cli import assert_clean_failure
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from nmt.checkpoint import (
    bytes_to_tensor,
    load_checkpoint,
    read_model_checkpoint,
    save_checkpoint,
    tokenizer_fingerprint,
)
from nmt.data.tokenizer import SpmSettings, train_sentencepiece
from nmt.errors import CheckpointError

INPUT = "Ein Mann fährt Fahrrad.\nZwei Hunde spielen im Schnee.\n"


@pytest.fixture(scope="module")
def last(trained_run: Path) -> Path:
    return trained_run / "checkpoints" / "last.pt"


def variant(source: Path, path: Path, change) -> Path:
    state = load_checkpoint(source)
    change(state)
    save_checkpoint(path, state)
    return path


# --------------------------------------------------------------------------- schema


def _set(*keys, value):
    def change(state):
        node = state
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


def _drop(*keys):
    def change(state):
        node = state
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return change


def _poison(name: str, value: float):
    def change(state):
        state["model"][name] = state["model"][name].clone()
        state["model"][name][0] = value

    return change


SCHEMA_CASES = {
    # One NaN in a LayerNorm weight turned every output into an empty line, exit 0.
    "nan weight": (
        _poison("encoder_norm.weight", float("nan")),
        "encoder_norm.weight holds 1 non-finite values (NaN or inf)",
    ),
    "inf weight": (_poison("encoder_norm.bias", float("-inf")), "encoder_norm.bias holds 1"),
    "meta tensor": (
        _set("model", "encoder_norm.weight", value=torch.empty(64, device="meta")),
        "encoder_norm.weight holds no data (a meta tensor)",
    ),
    "meta spm": (  # found by the fuzzer below: a traceback in the tokenizer before the weights
        _set("spm", "tgt", value=torch.empty(10, dtype=torch.uint8, device="meta")),
        "spm.tgt holds no data (a meta tensor)",
    ),
    "config as list": (_set("config", value=[1, 2]), "its config is a list"),
    "config invalid": (_set("config", "model", "heads", value=-4), "invalid configuration"),
    "spm missing": (_drop("spm"), "its spm entry is missing"),
    "spm.tgt float": (_set("spm", "tgt", value=torch.zeros(5)), "spm.tgt is a torch.float32"),
    "spm garbage": (
        _set("spm", "src", value=torch.arange(200, dtype=torch.uint8)),
        "invalid SentencePiece model",
    ),
    "tensor shape": (
        _set("model", "encoder_norm.weight", value=torch.zeros(3)),
        "encoder_norm.weight has shape (3,); the config's architecture needs (64,)",
    ),
    "tensor dtype": (
        _set("model", "encoder_norm.weight", value=torch.zeros(64, dtype=torch.int32)),
        "encoder_norm.weight is torch.int32",
    ),
    "tensor missing": (_drop("model", "encoder_norm.bias"), "missing: encoder_norm.bias"),
    "extra tensor": (_set("model", "extra", value=torch.zeros(1)), "unexpected: extra"),
    "model a list": (_set("model", value=[]), "model is a list"),
    "fingerprint altered": (
        _set("fingerprint", "tokenizer", value="0" * 64),
        "fingerprint.tokenizer does not match",
    ),
}


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_a_malformed_checkpoint_is_named_by_translate(case, last, tmp_path, cli_inline):
    change, fragment = SCHEMA_CASES[case]
    broken = variant(last, tmp_path / "broken.pt", change)
    with pytest.raises(CheckpointError, match="broken.pt"):
        read_model_checkpoint(broken)
    (tmp_path / "in.txt").write_text(INPUT)
    out = tmp_path / "out.txt"
    result = cli_inline(
        "translate", broken, "-i", tmp_path / "in.txt", "-o", out, "--device", "cpu"
    )
    assert_clean_failure(result, str(broken), fragment)
    assert not out.exists()


def test_evaluate_names_a_malformed_checkpoint(last, tmp_path, cli_inline):
    broken = variant(last, tmp_path / "broken.pt", _set("config", value=[1, 2]))
    (tmp_path / "src.de").write_text(INPUT)
    (tmp_path / "ref.en").write_text("A man rides a bike.\nTwo dogs play in the snow.\n")
    out_dir = tmp_path / "eval"
    args = ("--src", tmp_path / "src.de", "--ref", tmp_path / "ref.en", "--device", "cpu")
    result = cli_inline("evaluate", broken, *args, "--output", out_dir)
    assert_clean_failure(result, str(broken), "its config is a list")
    assert not out_dir.exists()


def test_the_valid_checkpoint_translates(last, tmp_path, cli_inline):
    (tmp_path / "in.txt").write_text(INPUT)
    out = tmp_path / "out.txt"
    result = cli_inline("translate", last, "-i", tmp_path / "in.txt", "-o", out, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == 2


# --------------------------------------------------------------------------- average


def _other_tokenizer(tiny_corpus, state) -> None:
    """The same vocabulary size (so every tensor shape agrees), another SentencePiece type."""
    text = (tiny_corpus.prepared / "train.de").read_text().splitlines()
    text += (tiny_corpus.prepared / "train.en").read_text().splitlines()
    size = state["vocab"]["src"]
    blob = train_sentencepiece(text, SpmSettings(vocab_size=size, model_type="bpe"))
    state["spm"] = {"src": bytes_to_tensor(blob), "tgt": bytes_to_tensor(blob)}
    state["fingerprint"]["tokenizer"] = tokenizer_fingerprint(blob, blob)


def test_average_refuses_another_tokenizer(tiny_corpus, last, tmp_path, cli_inline):
    other = variant(last, tmp_path / "bpe.pt", lambda s: _other_tokenizer(tiny_corpus, s))
    read_model_checkpoint(other)  # a valid checkpoint in itself
    out = tmp_path / "avg.pt"
    result = cli_inline("average", last, other, "-o", out)
    assert_clean_failure(result, f"cannot average {other} with {last}", "different tokenizers")
    assert not out.exists()


def test_average_refuses_another_architecture_of_the_same_shapes(last, tmp_path, cli_inline):
    other = variant(last, tmp_path / "gelu.pt", _set("config", "model", "activation", value="gelu"))
    out = tmp_path / "avg.pt"
    result = cli_inline("average", last, other, "-o", out)
    assert_clean_failure(
        result,
        f"cannot average {other} with {last}",
        "model.activation 'gelu' there, 'relu' in the first",
    )
    assert not out.exists()


def test_average_mixes_dropout_settings(last, tmp_path, cli_inline):
    """Dropout does not change what the weights mean: such checkpoints average."""
    other = variant(last, tmp_path / "d.pt", _set("config", "model", "dropout", value=0.3))
    result = cli_inline("average", last, other, "-o", tmp_path / "avg.pt")
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- fuzz


def _paths(state: dict, prefix: tuple = ()) -> list[tuple]:
    """Every key path of the nested dicts and lists of `state` (tensors are leaves)."""
    found = []
    # A list's first items stand for the rest (the 624 keys of numpy's RNG state would
    # otherwise draw most picks).
    items = state.items() if isinstance(state, dict) else list(enumerate(state))[:3]
    for key, value in items:
        path = (*prefix, key)
        found.append(path)
        if isinstance(value, (dict, list)) and len(path) < 4:
            found.extend(_paths(value, path))
    return found


VALUES = st.sampled_from(
    [
        None,
        True,
        -1,
        0,
        2**70,
        float("nan"),
        "x",
        b"\x00",
        [],
        [1, "a"],
        {},
        {"a": 1},
        (1, 2),
        torch.zeros(3),
        torch.zeros(2, dtype=torch.int64),
        torch.arange(50, dtype=torch.uint8),
        torch.zeros(64),
        torch.tensor(1.5),
    ]
)
MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["delete", "replace", "add", "retype", "poison", "meta"]),
        st.integers(min_value=0, max_value=10**9),
        VALUES,
    ),
    min_size=1,
    max_size=3,
)


def _mutate(state: dict, mutations) -> dict:
    state = copy.deepcopy(state)
    for op, pick, value in mutations:
        paths = _paths(state)
        if not paths:
            break
        # Every top-level entry is as likely as any other, however many keys it holds.
        tops = sorted({p[0] for p in paths}, key=str)
        top = tops[pick % len(tops)]
        under = [p for p in paths if p[0] == top]
        path = under[(pick // len(tops)) % len(under)]
        parent = state
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if op == "delete" and isinstance(parent, dict):
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[f"extra_{pick % 7}"] = value
        elif op == "retype" and isinstance(parent[key], torch.Tensor):
            parent[key] = parent[key].to(torch.int64 if pick % 2 else torch.float16)
        elif op == "meta" and isinstance(parent[key], torch.Tensor):
            parent[key] = torch.empty_like(parent[key], device="meta")
        elif op == "poison" and _is_float_tensor(parent[key]) and parent[key].numel():
            parent[key] = parent[key].clone()
            parent[key].view(-1)[pick % parent[key].numel()] = (float("nan"), float("inf"))[
                pick % 2
            ]
        else:
            parent[key] = value
    return state


def _is_float_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() and not value.is_meta


def _unusable_weights(state: dict) -> bool:
    """Whether the model's weights hold a non-finite value or no data: such a checkpoint must
    be refused, never translate (to empty lines, as one NaN made it do)."""
    model = state.get("model")
    tensors = model.values() if isinstance(model, dict) else ()
    return any(
        isinstance(t, torch.Tensor)
        and (t.is_meta or (_is_float_tensor(t) and not t.isfinite().all()))
        for t in tensors
    )


def _write(path: Path, state: dict) -> None:
    """Plain data with valid checksums, written as torch.save writes (no checks of ours)."""
    path.unlink(missing_ok=True)
    torch.save(state, path)


def _assert_works_or_fails_cleanly(result, *, output: Path | None = None) -> None:
    if result.returncode == 0:
        return
    assert_clean_failure(result)
    if output is not None:
        assert not output.exists(), "a failed command left its output behind"


@pytest.fixture(scope="module")
def fuzz_dir(trained_run: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "in.txt").write_text(INPUT)
    return root


@settings(
    max_examples=30,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking resumes: minutes
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutations=MUTATIONS)
def test_mutated_checkpoints_work_or_fail_cleanly(
    mutations, tiny_corpus, trained_run, fuzz_dir, cli_inline
):
    original = load_checkpoint(trained_run / "checkpoints" / "last.pt")
    mutated = _mutate(original, mutations)
    ckpt = fuzz_dir / "mutated.pt"
    _write(ckpt, mutated)

    out = fuzz_dir / "out.txt"
    out.unlink(missing_ok=True)
    translated = cli_inline(
        "translate", ckpt, "-i", fuzz_dir / "in.txt", "-o", out, "--device", "cpu"
    )
    _assert_works_or_fails_cleanly(translated, output=out)
    if _unusable_weights(mutated):
        assert translated.returncode != 0, "weights without data or with NaN/inf translated"

    averaged = fuzz_dir / "avg.pt"
    averaged.unlink(missing_ok=True)
    result = cli_inline("average", trained_run / "checkpoints" / "step_2.pt", ckpt, "-o", averaged)
    _assert_works_or_fails_cleanly(result, output=averaged)

    # Resume: the mutated file is the run's newest (last.pt and step_3.pt).
    run = fuzz_dir / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(trained_run, run)
    for name in ("last.pt", "step_3.pt"):
        _write(run / "checkpoints" / name, mutated)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    args = tiny_corpus.cli_args(run, "train.max_updates=3")
    resumed = cli_inline("train", *args, "--no-evaluate")
    _assert_works_or_fails_cleanly(resumed)
    if resumed.returncode != 0:
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
