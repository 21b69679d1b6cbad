"""The run's checkpoints (nmt/training/checkpoints.py): keep-last-N, fallback, averaging."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from nmt import checkpoint as ckpt
from nmt.checkpoint import load_checkpoint, save_checkpoint
from nmt.errors import CheckpointError
from nmt.training.checkpoints import CheckpointManager, average_checkpoints


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


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
