"""Checkpoints: round trips, atomic writes, refusal of code, keep-last-N, fallback, averaging."""

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
from nmt.training.checkpoints import CheckpointManager, average_checkpoints

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


# --------------------------------------------------------------------------- manager


def _step_of(path: Path) -> int:
    return load_checkpoint(path)["train_state"]["step"]


def _save_steps(manager: CheckpointManager, steps, best=()) -> None:
    for step in steps:
        manager.save({"train_state": {"step": step}}, step=step, is_best=step in best)


def test_keep_last_prunes_old_step_files(tmp_path: Path):
    manager = CheckpointManager(tmp_path / "ckpt", keep_last=2)
    _save_steps(manager, [100, 200, 300, 400, 500], best=[200])
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["best.pt", "last.pt", "step_400.pt", "step_500.pt"]
    assert _step_of(manager.last_path) == 500
    assert _step_of(manager.best_path) == 200  # its step file is gone, best.pt is not


def test_step_checkpoints_sort_by_number(tmp_path: Path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    _save_steps(manager, [9, 10, 100])
    (tmp_path / "step_x.pt").write_bytes(b"")  # not a step file
    assert [p.name for p in manager.step_checkpoints()] == [
        "step_9.pt",
        "step_10.pt",
        "step_100.pt",
    ]


def test_last_and_best_are_copies_when_links_fail(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(ckpt.os, "link", lambda *a, **k: _no_space())
    manager = CheckpointManager(tmp_path, keep_last=1)
    _save_steps(manager, [1, 2], best=[1])
    assert _step_of(manager.last_path) == 2 and _step_of(manager.best_path) == 1
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "last.pt", "step_2.pt"]


def test_symlinked_last_and_best_are_replaced_not_written_through(tmp_path: Path):
    # A user's `ln -s step_1.pt best.pt`: writing through the link would overwrite step_1.pt
    # with a later step's weights, silently.
    manager = CheckpointManager(tmp_path, keep_last=5)
    _save_steps(manager, [1, 2])
    for name, target in (("best.pt", "step_1.pt"), ("last.pt", "step_2.pt")):
        (tmp_path / name).unlink(missing_ok=True)
        (tmp_path / name).symlink_to(target)
    _save_steps(manager, [3], best=[3])
    assert [_step_of(tmp_path / f"step_{n}.pt") for n in (1, 2, 3)] == [1, 2, 3]
    assert _step_of(manager.last_path) == 3 and _step_of(manager.best_path) == 3
    assert not manager.last_path.is_symlink() and not manager.best_path.is_symlink()


def test_latest_loadable_none_without_checkpoints(tmp_path: Path):
    assert CheckpointManager(tmp_path / "missing", keep_last=1).latest_loadable() is None
    assert CheckpointManager(tmp_path, keep_last=1).latest_loadable() is None


def test_latest_loadable_prefers_last(tmp_path: Path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    _save_steps(manager, [1, 2, 3])
    path, state = manager.latest_loadable()
    assert path == manager.last_path and state["train_state"]["step"] == 3


def _corrupt(path: Path) -> None:
    """Replace `path` by its first half, as a new file (last.pt may share the inode)."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 2])


def test_latest_loadable_falls_back_past_a_corrupt_last(tmp_path: Path, capsys):
    manager = CheckpointManager(tmp_path, keep_last=3)
    _save_steps(manager, [1, 2, 3])
    _corrupt(manager.last_path)
    _corrupt(manager.step_path(3))
    path, state = manager.latest_loadable()
    assert path == manager.step_path(2) and state["train_state"]["step"] == 2
    err = capsys.readouterr().err
    assert "warning" in err and "last.pt" in err and "step_3.pt" in err


def test_latest_loadable_raises_when_nothing_loads(tmp_path: Path, capsys):
    manager = CheckpointManager(tmp_path, keep_last=2)
    _save_steps(manager, [1, 2])
    for path in [manager.last_path, *manager.step_checkpoints()]:
        _corrupt(path)
    with pytest.raises(CheckpointError, match="no loadable checkpoint"):
        manager.latest_loadable()


def test_keep_last_must_be_positive(tmp_path: Path):
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)


# --------------------------------------------------------------------------- averaging


def _filled(source: Path, path: Path, value: float, **dtypes: torch.dtype) -> Path:
    """A copy of the real checkpoint `source` whose every weight is `value` (tensor `name`
    in dtype `dtypes[name]` where given)."""
    state = load_checkpoint(source)
    state["model"] = {
        name: torch.full_like(t, value, dtype=dtypes.get(name.replace(".", "_"), t.dtype))
        for name, t in state["model"].items()
    }
    save_checkpoint(path, state)
    return path


def test_average_two_checkpoints(trained_run: Path, tmp_path: Path):
    last = trained_run / "checkpoints" / "last.pt"
    paths = [
        _filled(last, tmp_path / "a.pt", 1.0, encoder_norm_bias=torch.bfloat16),
        _filled(last, tmp_path / "b.pt", 4.0, encoder_norm_bias=torch.bfloat16),
    ]
    averaged = average_checkpoints(paths)

    weight = averaged["model"]["encoder_norm.weight"]
    assert torch.equal(weight, torch.full_like(weight, 2.5))
    bias = averaged["model"]["encoder_norm.bias"]
    assert bias.dtype == torch.bfloat16 and torch.equal(bias, torch.full_like(bias, 2.5))
    original = load_checkpoint(last)
    assert averaged["config"] == original["config"] and averaged["train_state"]["step"] == 3
    assert averaged["fingerprint"] == original["fingerprint"]
    assert not {"optimizer", "scheduler", "scaler"} & averaged.keys()
    assert averaged["averaged_from"] == [str(p) for p in paths]
    save_checkpoint(tmp_path / "avg.pt", averaged)  # the result is a checkpoint again
    assert torch.equal(load_checkpoint(tmp_path / "avg.pt")["model"]["encoder_norm.weight"], weight)


def test_average_accumulates_in_float64(trained_run: Path, tmp_path: Path):
    # In float32, 2**24 + 1 rounds back to 2**24; the float64 sum keeps both ones.
    last = trained_run / "checkpoints" / "last.pt"
    paths = [_filled(last, tmp_path / f"{i}.pt", v) for i, v in enumerate([2.0**24, 1.0, 1.0])]
    averaged = average_checkpoints(paths)["model"]["encoder_norm.weight"]
    assert averaged.dtype == torch.float32
    assert torch.equal(averaged, torch.full_like(averaged, (2.0**24 + 2) / 3))


def test_a_checkpoint_given_twice_or_as_the_output_is_refused(trained_run: Path, tmp_path: Path):
    """Found broken: `average step_3.pt last.pt` (a hard link to step_3.pt) counted it twice,
    and `average a.pt b.pt -o a.pt` replaced a run's step file by averaged weights."""
    from nmt.training.checkpoints import check_average_output

    checkpoints = trained_run / "checkpoints"
    step = max(checkpoints.glob("step_*.pt"), key=lambda p: int(p.stem[5:]))
    for twice in ([step, step], [step, checkpoints / "last.pt"]):
        with pytest.raises(CheckpointError, match="they are the same file"):
            average_checkpoints(twice)
    other = _filled(step, tmp_path / "other.pt", 1.0)
    with pytest.raises(CheckpointError, match="is one of the checkpoints being averaged"):
        check_average_output([other, step], checkpoints / "last.pt")
    check_average_output([other, step], tmp_path / "new.pt")  # a new file is fine


def test_average_of_nothing_is_refused():
    with pytest.raises(CheckpointError, match="no checkpoints"):
        average_checkpoints([])


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
