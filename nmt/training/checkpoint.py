"""Self-describing checkpoints: atomic writes, weights-only loads, keep-last-N / best, averaging.

A checkpoint is data, never code: it is read with `torch.load(..., weights_only=True)`, so
every value in it must be a tensor, a number, a string, bytes, a bool, None, a torch dtype,
device or Size, or a list / tuple / dict of those (`save_checkpoint` checks this). The
state the trainer writes follows this convention:

    format_version  int    FORMAT_VERSION (added by `save_checkpoint`)
    nmt_version     str    `nmt.__version__` of the writer (added by `save_checkpoint`)
    config          dict   the resolved config, `config_to_dict(cfg)`
    spm             dict   {"src": uint8 tensor, "tgt": uint8 tensor}: the SentencePiece
                           model files (tgt = src's bytes for a joint vocabulary), stored
                           with `bytes_to_tensor`, read back with `tensor_to_bytes`
    vocab           dict   vocabulary sizes and whether it is joint
    model           dict   `state_dict()` of the unwrapped module (never compiled / DDP)
    optimizer       dict   `optimizer.state_dict()`
    scheduler       dict   `scheduler.state_dict()`
    scaler          dict   `GradScaler.state_dict()`
    train_state     dict   progress: updates done, epoch, position in the epoch, best score
    rng             dict   `capture_rng_state()`

Only `format_version` is checked here; the other keys are the trainer's and translator's.

Files of a run (`CheckpointManager`): `step_<N>.pt` (the newest `keep_last` are kept),
`last.pt` (the newest save) and `best.pt` (the best validation so far). Every file appears
under its name only complete: it is written to a temporary file in the same directory,
flushed and fsynced, then renamed over the old one. A writer killed mid-save (SIGKILL, power
loss) leaves its temporary file behind; `CheckpointManager.remove_stale_temporaries` deletes
those. Loading checks every CRC-32 of the zip archive torch.save writes (torch.load does not),
so a flipped bit is reported as a corrupt file instead of loading as wrong weights.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import sys
import uuid
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import nmt
from nmt.errors import CheckpointError
from nmt.filetype import check_checkpoint_file

FORMAT_VERSION = 1

# Fields that belong to one training trajectory and are meaningless for an averaged model.
_TRAJECTORY_KEYS = ("optimizer", "scheduler", "scaler")

# What `torch.load(weights_only=True)` reads back (torch.dtype / device / Size included).
_PLAIN_SCALARS = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device)
_PLAIN_SEQUENCES = (list, tuple, torch.Size)
_PLAIN_MAPPINGS = (dict, OrderedDict)

_STEP_FILE = re.compile(r"step_(\d+)\.pt")
# `_replace_atomically`'s temporary files: .<name>.<pid of the writer>.<8 hex digits>.tmp
_TEMP_FILE = re.compile(r"\..+\.(\d+)\.[0-9a-f]{8}\.tmp")


# --------------------------------------------------------------------------- save / load


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (plus format_version and nmt_version) to `path` atomically.

    On an OS error (a full disk, say) the temporary file is removed, a previous file at
    `path` stays as it was, and `CheckpointError` names the path and the error.
    """
    payload = {**state, "format_version": FORMAT_VERSION, "nmt_version": nmt.__version__}
    _check_plain_data(payload, "state")

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as f:
            _torch_save(payload, f)
            f.flush()
            os.fsync(f.fileno())

    _replace_atomically(Path(path), write)


def _torch_save(payload: dict[str, Any], f) -> None:
    """`torch.save(payload, f)`, raising the OSError of a failed write (a full disk).

    torch.save writes through `f` from C++, which reports a write that raised as a bare
    RuntimeError ("[enforce fail at inline_container.cc] unexpected pos ..."); the OSError
    that caused it is what the user needs to see.
    """
    writer = _ErrorKeepingWriter(f)
    try:
        torch.save(payload, writer)
    except RuntimeError:
        if writer.error is not None:
            raise writer.error from None
        raise


class _ErrorKeepingWriter:
    """The binary file torch.save writes to, remembering the OSError of a failed write."""

    def __init__(self, f):
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self._f.flush()

    def __getattr__(self, name: str) -> Any:  # anything else: the file's own
        return getattr(self._f, name)


def _check_plain_data(value: Any, where: str) -> None:
    """Fail now, not at resume time, on a value that a weights-only load would refuse.

    Scalars are checked by exact type: a numpy float or an enum pickles as a class.
    """
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN_SCALARS:
        return
    if type(value) in _PLAIN_SEQUENCES:
        for i, item in enumerate(value):
            _check_plain_data(item, f"{where}[{i}]")
        return
    if type(value) in _PLAIN_MAPPINGS:
        for key, item in value.items():
            _check_plain_data(key, f"a key of {where}")
            _check_plain_data(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}; a checkpoint holds "
        "only tensors, numbers, strings, bytes, bools, None, lists, tuples and dicts"
    )


def load_checkpoint(path: Path, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; never unpickles Python objects.

    A missing, unreadable, truncated or corrupt file, one that holds anything but plain data,
    and one of another format version all raise `CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    check_checkpoint_file(path)  # a config or text file given by mistake is named as such
    _check_checksums(path)
    state = _torch_load(path, map_location)
    _check_format(path, state)
    return state


def _check_checksums(path: Path) -> None:
    """Compare every member of the zip archive torch.save writes with its stored CRC-32.

    torch.load never does, so one flipped bit in a tensor (a bad disk, a bad copy) would load
    as silently wrong weights. A file that is no zip archive (truncated, a legacy or foreign
    pickle) is left to torch.load, which refuses it with its own message.
    """
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {_os_reason(exc)}") from exc
    except Exception as exc:  # a damaged directory of the archive: BadZipFile and others
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    if bad_member is not None:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: {bad_member} does not match its CRC-32 checksum"
        )


def _torch_load(path: Path, map_location: Any) -> Any:
    try:
        with warnings.catch_warnings():
            # Raised for files pickled outside torch.save (protocol > 2); they fail cleanly.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise CheckpointError(
                f"refusing to load checkpoint {path}: it is not plain data (tensors, numbers, "
                f"strings, lists, dicts) and a checkpoint is never run as code "
                f"({_weights_only_reason(exc)})"
            ) from exc
        raise CheckpointError(f"checkpoint {path} is corrupt ({_first_line(exc)})") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {_os_reason(exc)}") from exc
    except Exception as exc:  # zip, pickle and EOF errors of many kinds: all mean a bad file
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc


def _check_format(path: Path, state: Any) -> None:
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not an nmt checkpoint (it has no format_version)")
    found = state["format_version"]
    if found != FORMAT_VERSION:
        writer = state.get("nmt_version", "unknown")
        raise CheckpointError(
            f"checkpoint {path} has format version {found!r} (written by nmt {writer}); "
            f"this nmt ({nmt.__version__}) reads format version {FORMAT_VERSION}"
        )


def _weights_only_reason(exc: Exception) -> str:
    """The one informative line of torch's long weights-only message."""
    lines = [line.strip() for line in str(exc).splitlines()]
    for marker in ("GLOBAL", "Unsupported"):
        for line in lines:
            if marker in line:
                return line
    return "unsupported pickle content"


def _first_line(exc: Exception) -> str:
    """The first sentence of an exception's message (torch's run to a paragraph)."""
    text = str(exc).strip()
    return text.splitlines()[0].split(". ")[0] if text else "no detail"


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


# --------------------------------------------------------------------------- atomic files


def _replace_atomically(path: Path, fill: Callable[[Path], None]) -> None:
    """Let `fill` create a temporary file next to `path`, then rename it over `path`.

    The temporary name is unique (pid + random) so two writers never share one. Whatever
    goes wrong, the temporary file is removed; OS errors become `CheckpointError`.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fill(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {_os_reason(exc)}") from exc
    finally:
        tmp.unlink(missing_ok=True)  # after a successful replace it no longer exists
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link `src` as `dst` (instant, no extra space); copy where links are unsupported.

    Sharing one inode is safe because checkpoint files are only ever replaced by rename,
    never rewritten in place.
    """
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
        with open(dst, "rb") as f:
            os.fsync(f.fileno())


# --------------------------------------------------------------------------- stored values


def bytes_to_tensor(data: bytes) -> torch.Tensor:
    """Raw bytes (a SentencePiece model file) as a 1-D uint8 tensor, storable weights-only."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    if not data:
        return torch.empty(0, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def tensor_to_bytes(tensor: torch.Tensor) -> bytes:
    """Inverse of `bytes_to_tensor`."""
    if tensor.dtype != torch.uint8 or tensor.dim() != 1:
        raise ValueError(
            f"expected a 1-D uint8 tensor, got {tensor.dtype} of shape {tuple(tensor.shape)}"
        )
    return tensor.cpu().contiguous().numpy().tobytes()


def capture_rng_state() -> dict[str, Any]:
    """Every RNG state a training run draws from, as plain data (weights-only loadable).

    python: `random.getstate()` (a tuple of ints); numpy: the legacy global generator, its
    key array as a list of ints; torch: `torch.get_rng_state()`; cuda: one state per device,
    empty when this process never initialised CUDA.
    """
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what `capture_rng_state` returned (possibly after a save/load round trip).

    CUDA states are restored for the devices present (none on a CPU-only machine).
    """
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np.random.set_state(_numpy_state_tuple(state["numpy"]))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        for device, device_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state.cpu(), device=device)


def _numpy_state() -> dict[str, Any]:
    # The legacy state holds an ndarray, which weights_only refuses: store plain ints.
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "bit_generator": str(name),
        "keys": keys.tolist(),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def _numpy_state_tuple(state: dict[str, Any]) -> tuple:
    keys = np.asarray(state["keys"], dtype=np.uint32)
    return (
        state["bit_generator"],
        keys,
        state["pos"],
        state["has_gauss"],
        state["cached_gaussian"],
    )


# --------------------------------------------------------------------------- a run's files


class CheckpointManager:
    """`step_<N>.pt`, `last.pt` and `best.pt` in one directory.

    `save` writes the step file first, then points `best.pt` (for a best save) and last of
    all `last.pt` at it with an atomic hard link (a copy where links are unsupported), then
    deletes all but the newest `keep_last` step files. A crash at any moment leaves only
    complete files, and `last.pt` moves only once the save is whole: a resume from it never
    finds a `best.pt` older than the best score it records.
    """

    def __init__(self, directory: Path, *, keep_last: int):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    @property
    def last_path(self) -> Path:
        return self.directory / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.directory / "best.pt"

    def step_path(self, step: int) -> Path:
        return self.directory / f"step_{step}.pt"

    def save(self, state: dict[str, Any], *, step: int, is_best: bool) -> Path:
        """Save `state` as the checkpoint of update `step`; returns the step file's path."""
        path = self.step_path(step)
        save_checkpoint(path, state)
        if is_best:
            self._point(self.best_path, path)
        self._point(self.last_path, path)  # the commit point of the save: see the class doc
        self._prune()
        return path

    def step_checkpoints(self) -> list[Path]:
        """The step files present, oldest (smallest step) first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _STEP_FILE.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return [path for _, path in sorted(found)]

    def latest_loadable(
        self,
        *,
        map_location: Any = "cpu",
        check: Callable[[Path, dict[str, Any]], None] | None = None,
    ) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that loads: `last.pt`, else step files newest first.

        `check(path, state)` may raise `CheckpointError` to reject a file that loads but
        cannot serve (a resume needs optimizer state, for one). Unusable files are skipped
        with a warning on stderr. Returns None when the directory holds no checkpoint;
        raises `CheckpointError` when it holds some but none is usable (starting afresh would
        silently throw a run away).
        """
        candidates = [self.last_path] if self.last_path.is_file() else []
        candidates += self.step_checkpoints()[::-1]
        if not candidates:
            return None
        problems = []
        for path in candidates:
            try:
                state = load_checkpoint(path, map_location=map_location)
                if check is not None:
                    check(path, state)
                return path, state
            except CheckpointError as exc:
                print(f"warning: skipping checkpoint: {exc}", file=sys.stderr)
                problems.append(f"  - {exc}")
        raise CheckpointError(
            f"no loadable checkpoint in {self.directory}:\n" + "\n".join(problems)
        )

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files of saves whose writer died (SIGKILL, power loss), which
        nothing else would ever remove; returns them. A file whose writing process still runs
        (on this machine) is kept. Call it before this process saves anything.
        """
        if not self.directory.is_dir():
            return []
        removed = []
        for path in sorted(self.directory.iterdir()):
            match = _TEMP_FILE.fullmatch(path.name)
            if match and not _is_running_elsewhere(int(match.group(1))):
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def _point(self, name: Path, target: Path) -> None:
        _replace_atomically(name, lambda tmp: _link_or_copy(target, tmp))

    def _prune(self) -> None:
        for old in self.step_checkpoints()[: -self.keep_last]:
            try:
                old.unlink(missing_ok=True)
            except OSError as exc:  # a leftover file is no reason to stop training
                print(f"warning: cannot delete {old}: {_os_reason(exc)}", file=sys.stderr)


def _is_running_elsewhere(pid: int) -> bool:
    """Whether `pid` is a live process other than this one."""
    if pid == os.getpid():  # a reused pid: this process has not saved yet
        return False
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


# --------------------------------------------------------------------------- averaging


def average_checkpoints(paths: list[Path]) -> dict[str, Any]:
    """The checkpoint whose model weights are the mean of those in `paths`.

    For every floating-point tensor k: avg_k = (1/n) * sum_i w_i[k], summed in float64 and
    cast back to the tensor's dtype. Other entries (integer buffers) come from the first
    checkpoint, as do all other fields (config, spm, progress, ...), except optimizer,
    scheduler and scaler state, which belong to one trajectory and are dropped.
    `averaged_from` lists the paths. Checkpoints are loaded one at a time.
    """
    if not paths:
        raise CheckpointError("no checkpoints to average")
    first = load_checkpoint(paths[0])
    reference = _model_weights(paths[0], first)
    sums = {k: v.to(torch.float64, copy=True) for k, v in reference.items() if _is_float(v)}
    for path in paths[1:]:
        weights = _model_weights(path, load_checkpoint(path))
        _check_same_layout(reference, weights, first=paths[0], other=path)
        for name, total in sums.items():
            total.add_(weights[name].to(torch.float64))
    model = {
        name: sums[name].div_(len(paths)).to(value.dtype) if name in sums else value
        for name, value in reference.items()
    }
    averaged = {k: v for k, v in first.items() if k not in _TRAJECTORY_KEYS}
    averaged["model"] = model
    averaged["averaged_from"] = [str(p) for p in paths]
    return averaged


def _is_float(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def _model_weights(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    model = state.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"checkpoint {path} holds no model weights (no 'model' dict)")
    return model


def _check_same_layout(
    reference: dict[str, Any], weights: dict[str, Any], *, first: Path, other: Path
) -> None:
    missing, extra = sorted(set(reference) - set(weights)), sorted(set(weights) - set(reference))
    if missing or extra:
        raise CheckpointError(
            f"cannot average {other} with {first}: parameter names differ "
            f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'})"
        )
    for name, value in reference.items():
        if not isinstance(value, torch.Tensor):
            continue
        theirs = weights[name]
        shape = tuple(theirs.shape) if isinstance(theirs, torch.Tensor) else type(theirs).__name__
        if shape != tuple(value.shape):
            raise CheckpointError(
                f"cannot average {other} with {first}: {name} has shape {shape} there "
                f"but {tuple(value.shape)} in {first}"
            )
