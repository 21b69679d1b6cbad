"""The checkpoint file (nmt/checkpoint.py): round trips, atomic writes, refusal of code,
bad files, upgrades of older format versions."""

from __future__ import annotations

import errno
import os
import pickle
import random
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

import nmt
from nmt import checkpoint as ckpt
from nmt.checkpoint import (
    FORMAT_VERSION,
    bytes_to_tensor,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    tensor_to_bytes,
)
from nmt.errors import CheckpointError

SPM_BYTES = bytes(range(256)) * 3 + b"\x00trailing"


def _state(value: float = 1.0) -> dict:
    return {
        "config": {"model": {"d_model": 8, "norm": "pre"}, "data": {"test_splits": ["a", "b"]}},
        "spm": {"src": bytes_to_tensor(SPM_BYTES), "tgt": bytes_to_tensor(b"tgt")},
        "model": {
            "w": torch.full((2, 3), value),
            "h": torch.full((4,), value, dtype=torch.bfloat16),
            "count": torch.tensor(7),
        },
        "train_state": {"step": 12, "epoch": 3, "best": (0.5, None), "done": False},
        "misc": [1, 2.5, "x", b"raw", None, torch.float16, torch.Size([2])],
    }


def _assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def _marker_command(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


class _Exploit:
    """Pickles as a call of os.system: loading it with plain pickle would run a command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


# --------------------------------------------------------------------------- round trip


def test_round_trip(tmp_path: Path):
    path = tmp_path / "sub" / "c.pt"
    save_checkpoint(path, _state())
    loaded = load_checkpoint(path)
    assert loaded["format_version"] == FORMAT_VERSION
    assert loaded["nmt_version"] == nmt.__version__
    _assert_same({k: v for k, v in loaded.items() if "version" not in k}, _state())
    assert tensor_to_bytes(loaded["spm"]["src"]) == SPM_BYTES
    assert os.listdir(path.parent) == ["c.pt"]


def test_bytes_tensor_round_trip():
    for data in (b"", b"\x00", SPM_BYTES):
        tensor = bytes_to_tensor(data)
        assert tensor.dtype == torch.uint8 and tensor.dim() == 1
        assert tensor_to_bytes(tensor) == data
    with pytest.raises(ValueError, match="uint8"):
        tensor_to_bytes(torch.zeros(3))
    with pytest.raises(TypeError, match="bytes"):
        bytes_to_tensor(None)


def test_real_training_state_round_trips(tmp_path: Path):
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
    }
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    _assert_same(loaded["model"], state["model"])
    _assert_same(loaded["optimizer"], state["optimizer"])
    torch.optim.AdamW(model.parameters()).load_state_dict(loaded["optimizer"])


def test_save_refuses_values_a_weights_only_load_would_refuse(tmp_path: Path):
    path = tmp_path / "c.pt"
    with pytest.raises(TypeError, match=r"state\['progress'\]\['dir'\] is a pathlib"):
        save_checkpoint(path, {"progress": {"dir": Path("x")}})
    with pytest.raises(TypeError, match="numpy"):
        save_checkpoint(path, {"score": np.float64(1.5)})
    assert not path.exists() and os.listdir(tmp_path) == []


def test_rng_state_round_trips_through_a_checkpoint(tmp_path: Path):
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    random.gauss(0, 1)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's legacy state

    def draw():
        return (
            [random.random(), random.gauss(0, 1)],
            np.random.standard_normal(3).tolist() + np.random.rand(2).tolist(),
            torch.rand(4).tolist(),
        )

    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    first = draw()
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert draw() == first


# --------------------------------------------------------------------------- atomic writes


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_during_write_keeps_the_old_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(1.0))

    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)  # a partly written temporary file
        _no_space()

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(path, _state(2.0))
    assert "No space left" in str(err.value) and str(path) in str(err.value)
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((2, 3), 1.0))


def test_failed_rename_keeps_the_old_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(1.0))
    monkeypatch.setattr(ckpt.os, "replace", _no_space)
    with pytest.raises(CheckpointError, match="No space left"):
        save_checkpoint(path, _state(2.0))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["last.pt"]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((2, 3), 1.0))


# --------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path):
    with pytest.raises(CheckpointError, match="not found.*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99])
def test_truncated_file(tmp_path: Path, keep: float):
    good = tmp_path / "good.pt"
    save_checkpoint(good, _state())
    data = good.read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        load_checkpoint(bad)
    assert str(bad) in str(err.value)


def test_garbage_file(tmp_path: Path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint at all\n" * 10)
    with pytest.raises(CheckpointError, match=str(bad)):
        load_checkpoint(bad)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickled_command_is_refused_and_never_run(tmp_path: Path, writer: str):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format_version": FORMAT_VERSION, "model": _Exploit(_marker_command(marker))}
    with open(path, "wb") as f:
        torch.save(payload, f) if writer == "torch.save" else pickle.dump(payload, f)

    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "refusing" in message
    assert "weights_only` set to `False`" not in message  # never advise the unsafe load
    assert not marker.exists()


def test_the_exploit_in_the_test_above_is_real(tmp_path: Path):
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Exploit(_marker_command(marker))))
    assert marker.exists()


@pytest.mark.parametrize("content", [{"model": {}}, [1, 2], torch.zeros(2)])
def test_not_an_nmt_checkpoint(tmp_path: Path, content):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=f"{path} is not an nmt checkpoint"):
        load_checkpoint(path)


def test_other_format_version(tmp_path: Path):
    path = tmp_path / "future.pt"
    torch.save({"format_version": 99, "nmt_version": "9.0.0"}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message
    assert "format version 99" in message and f"format version {FORMAT_VERSION}" in message


# --------------------------------------------------------------------------- upgrades


def test_every_older_format_version_has_an_upgrade():
    assert set(ckpt.UPGRADES) == set(range(ckpt.OLDEST_FORMAT_VERSION, FORMAT_VERSION))


def test_a_version_1_file_gets_the_fingerprint_of_its_tokenizer(tmp_path: Path):
    spm = {"src": bytes_to_tensor(b"source model"), "tgt": bytes_to_tensor(b"target model")}
    torch.save({"format_version": 1, "spm": spm, "model": {}}, tmp_path / "v1.pt")
    torch.save({"format_version": 1, "model": {}}, tmp_path / "no_spm.pt")
    loaded = load_checkpoint(tmp_path / "v1.pt")
    assert loaded["format_version"] == FORMAT_VERSION
    expected = ckpt.tokenizer_fingerprint(b"source model", b"target model")
    assert loaded["fingerprint"] == {"tokenizer": expected, "data": None}
    # Malformed spm: upgraded all the same (the schema check names the problem later).
    assert load_checkpoint(tmp_path / "no_spm.pt")["fingerprint"]["tokenizer"] is None


def test_the_tokenizer_fingerprint_tells_every_split_of_the_bytes_apart():
    fp = ckpt.tokenizer_fingerprint
    assert fp(b"ab", b"c") != fp(b"a", b"bc")
    assert fp(b"ab", b"c") == fp(b"ab", b"c")
    assert len(fp(b"", b"")) == 64
