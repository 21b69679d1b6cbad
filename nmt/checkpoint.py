"""The checkpoint format, in one place for training and decoding alike.

A checkpoint is data, never code: it is read with `torch.load(..., weights_only=True)`, so
every value in it must be a tensor, a number, a string, bytes, a bool, None, a torch dtype,
device or Size, or a list / tuple / dict of those (`save_checkpoint` checks this). The
state the trainer writes (format version 2):

    format_version  int    FORMAT_VERSION (added by `save_checkpoint`)
    nmt_version     str    `nmt.__version__` of the writer (added by `save_checkpoint`)
    config          dict   the resolved config, `config_to_dict(cfg)`
    spm             dict   {"src": uint8 tensor, "tgt": uint8 tensor}: the SentencePiece
                           model files (tgt = src's bytes for a joint vocabulary), stored
                           with `bytes_to_tensor`, read back with `tensor_to_bytes`
    fingerprint     dict   {"tokenizer": sha256 of the spm files (`tokenizer_fingerprint`),
                            "data": sha256 of the prepared training data, or None}: what
                           the weights were trained on (new in version 2)
    vocab           dict   vocabulary sizes and whether it is joint
    model           dict   `state_dict()` of the unwrapped module (never compiled / DDP)
    optimizer       dict   `optimizer.state_dict()`          } training state: absent from
    scheduler       dict   `scheduler.state_dict()`          } averaged checkpoints; the
    scaler          dict   `GradScaler.state_dict()`         } trainer checks it on resume
    train_state     dict   progress: updates done, epoch, position in the epoch, best score
    rng             dict   `capture_rng_state()`
    init_from       dict   {"path", "step", "sha256"} of the checkpoint the run started from
                           (`train.init_from`), or None; optional (older files lack it)

Three layers of checks, each refusing with a `CheckpointError` that names the file:
`load_checkpoint` reads the file (CRC-32 of every zip member, weights-only unpickling, file
type sniffing for a config or text given by mistake) and brings an older format version up
to date through `UPGRADES` (fairseq's `_upgrade_state_dict`); `read_model_checkpoint`
checks the schema decoding needs (a config that validates, SentencePiece models that load,
the fingerprint, model tensors with exactly the names, shapes and float dtypes the config's
architecture implies); the trainer checks the training state it restores.

Every file appears under its name only complete: it is written to a temporary file in the
same directory, flushed and fsynced, then renamed over the old one. The keep-last-N / best
policy of a run's files is `nmt.training.checkpoints`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import shutil
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmt import files
from nmt.config import ExperimentConfig, config_from_dict, load_config
from nmt.data.tokenizer import PAD_ID, Tokenizer
from nmt.errors import CheckpointError, NmtError, OutputError
from nmt.model.transformer import Transformer
from nmt.version import __version__

FORMAT_VERSION = 2
OLDEST_FORMAT_VERSION = 1

# What `torch.load(weights_only=True)` reads back (torch.dtype / device / Size included).
_PLAIN_SCALARS = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device)
_PLAIN_SEQUENCES = (list, tuple, torch.Size)
_PLAIN_MAPPINGS = (dict, OrderedDict)

# In every export directory: the checkpoint it was exported from (`nmt.interop.source`).
PROVENANCE_NAME = "nmt_source.json"
CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")
_SNIFF_BYTES = 64 * 1024
# A line that starts a section of an nmt config: `model:`, `train:`, ...
_CONFIG_LINE = re.compile(r"^(name|run_dir|data|model|train|decode)\s*:", re.MULTILINE)
_WANTED = "give a .pt checkpoint written by nmt train (runs/<name>/checkpoints/*.pt)"
_SHA256 = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------- identity


def refuse_duplicates(paths: Sequence[Path], *, verb: str = "average") -> None:
    """One file given twice (or `last.pt` / `best.pt`, hard links to a step file, beside that
    step file) would silently count twice in the mean (of weights, or of an ensemble's
    log-probs: a model ensembled with itself is that model, at twice the cost)."""
    seen: dict[tuple[int, int], Path] = {}
    for path in paths:
        key = files.file_key(path)
        if key is not None and key in seen:
            raise CheckpointError(
                f"cannot {verb} {path} with {seen[key]}: they are the same file "
                "(last.pt and best.pt are links to step files); give each checkpoint once"
            )
        if key is not None:
            seen[key] = path


# --------------------------------------------------------------------------- save / load


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (plus format_version and nmt_version) to `path` atomically.

    On an OS error (a full disk, say) the temporary file is removed, a previous file at
    `path` stays as it was, and `CheckpointError` names the path and the error.
    """
    payload = {**state, "format_version": FORMAT_VERSION, "nmt_version": __version__}
    _check_plain_data(payload, "state")

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as f:
            _torch_save(payload, f)
            f.flush()
            os.fsync(f.fileno())

    replace_atomically(Path(path), write)


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
    and one of an unknown format version all raise `CheckpointError` naming the file. An
    older format version is brought up to date (`UPGRADES`). Only the format is checked
    here: `read_model_checkpoint` checks what decoding needs.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a directory: give a checkpoint file (e.g. runs/NAME/checkpoints/"
            "best.pt), or a directory written by nmt export --to ctranslate2"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    check_checkpoint_file(path)  # a config or text file given by mistake is named as such
    _check_checksums(path)
    state = _torch_load(path, map_location)
    _check_format(path, state)
    _check_tensors_hold_data(path, state)
    return upgrade_state(state)


def _check_tensors_hold_data(path: Path, value: Any, where: str = "") -> None:
    """A tensor saved from the meta device loads with a shape and no data: every use of it
    fails far from here, so any such tensor, anywhere in the file, is refused now."""
    if isinstance(value, torch.Tensor) and value.is_meta:
        raise CheckpointError(f"{path}: {where} holds no data (a meta tensor)")
    items = value.items() if isinstance(value, dict) else None
    if isinstance(value, (list, tuple)):
        items = ((f"[{i}]", item) for i, item in enumerate(value))
    for key, item in items or ():
        name = key if str(key).startswith("[") else f".{key}"
        _check_tensors_hold_data(path, item, f"{where}{name}".lstrip("."))


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
    except Exception as exc:  # a damaged directory of the archive: BadZipFile and others
        raise _unreadable(path, exc) from exc
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
    except Exception as exc:  # zip, pickle and EOF errors of many kinds: all mean a bad file
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    if isinstance(exc, OSError):
        return CheckpointError(f"cannot read checkpoint {path}: {files.os_reason(exc)}")
    return CheckpointError(
        f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {_first_line(exc)})"
    )


def _check_format(path: Path, state: Any) -> None:
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not an nmt checkpoint (it has no format_version)")
    found = state["format_version"]
    # type(...) is int: True == 1 in Python, and a bool is no version.
    if type(found) is not int or not OLDEST_FORMAT_VERSION <= found <= FORMAT_VERSION:
        writer = state.get("nmt_version", "unknown")
        raise CheckpointError(
            f"checkpoint {path} has format version {found!r} (written by nmt {writer}); "
            f"this nmt ({__version__}) reads format version {FORMAT_VERSION} "
            f"(and older ones from {OLDEST_FORMAT_VERSION})"
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


# --------------------------------------------------------------------------- upgrades


def _upgrade_v1_to_v2(state: dict[str, Any]) -> dict[str, Any]:
    """Version 2 adds `fingerprint`. The tokenizer's is computed from the stored spm files;
    the prepared data a version-1 checkpoint was trained on is unknown (None), so a resume
    compares the tokenizer alone."""
    spm = state.get("spm")
    tokenizer = None
    if isinstance(spm, dict) and all(_is_byte_tensor(spm.get(k)) for k in ("src", "tgt")):
        tokenizer = tokenizer_fingerprint(tensor_to_bytes(spm["src"]), tensor_to_bytes(spm["tgt"]))
    return {**state, "fingerprint": {"tokenizer": tokenizer, "data": None}}


# From format version N to N+1: each step sees what the previous one returned. A future
# format change adds one entry here instead of orphaning every trained model.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _upgrade_v1_to_v2}


def upgrade_state(state: dict[str, Any]) -> dict[str, Any]:
    """`state` (already checked by `_check_format`) in the current format version."""
    version = state["format_version"]
    while version < FORMAT_VERSION:
        state = UPGRADES[version](state)
        version += 1
        state["format_version"] = version
    return state


# --------------------------------------------------------------------------- atomic files


def replace_atomically(
    path: Path, fill: Callable[[Path], None], *, through_links: bool = True
) -> None:
    """`nmt.files.replace_atomically` (unique temporary, fsync, rename, symlink target kept
    unless `through_links=False`), with its failures reported as `CheckpointError`."""
    try:
        files.replace_atomically(
            path, fill, describe=f"checkpoint {path}", through_links=through_links
        )
    except OutputError as exc:
        raise CheckpointError(str(exc)) from exc


def link_or_copy(src: Path, dst: Path) -> None:
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
    rest = (state[key] for key in ("pos", "has_gauss", "cached_gaussian"))
    return (state["bit_generator"], keys, *rest)


# --------------------------------------------------------------------------- file type


def check_checkpoint_file(path: Path) -> None:
    """Raise CheckpointError saying what `path` is if it cannot be a checkpoint.

    torch.save writes a zip archive (b"PK\\x03\\x04"); a legacy torch.save file or a pickle
    starts with the pickle opcode PROTO (b"\\x80"). torch's own error for any other file
    ("Unsupported operand 35", "invalid load key") would not tell the user that they passed
    a config or a text file by mistake. Quiet for a file that starts like a checkpoint and
    for one that cannot be opened: the loader then reports it itself.
    """
    try:
        # Path.open, not this module's open: the fault tests count this module's opens as
        # the writes of saves.
        with Path(path).open("rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return
    if head.startswith(CHECKPOINT_MAGIC):
        return
    if not head:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt (the file is empty)")
    raise CheckpointError(
        f"{path} is not a checkpoint but {_describe(Path(path), head)}: {_WANTED}"
    )


def _describe(path: Path, head: bytes) -> str:
    """What the first bytes of a non-checkpoint file look like, in a few words."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the sample
            return "binary data of another format"
        text = head[: exc.start].decode("utf-8")
    if path.suffix.lower() in (".yaml", ".yml") or _CONFIG_LINE.search(text):
        return "a YAML config (a config goes to nmt prepare, train or run)"
    return "a text file"


# --------------------------------------------------------------------------- fingerprints


def tokenizer_fingerprint(src_model: bytes, tgt_model: bytes) -> str:
    """sha256 of the source and target SentencePiece model files (the same bytes twice for a
    joint vocabulary): two tokenizers with the same fingerprint split text identically."""
    digest = hashlib.sha256()
    for blob in (src_model, tgt_model):
        digest.update(len(blob).to_bytes(8, "little"))  # no two splits of one byte string
        digest.update(blob)
    return digest.hexdigest()


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class ModelCheckpoint:
    """A loaded checkpoint whose config, tokenizer, fingerprint and model tensors passed the
    schema check: enough to build the model and decode."""

    path: Path
    state: dict[str, Any]
    config: ExperimentConfig
    tokenizer: Tokenizer

    @property
    def fingerprint(self) -> dict[str, str | None]:
        return self.state["fingerprint"]


def read_model_checkpoint(path: Path, *, map_location: Any = "cpu") -> ModelCheckpoint:
    """Load `path` and check everything decoding reads from it (see `check_model_schema`)."""
    path = Path(path)
    return check_model_schema(path, load_checkpoint(path, map_location=map_location))


def load_run_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """`load_config` of a run: the architecture and tokenizer keys the config leaves unset
    come from the checkpoint `train.init_from` names, read (and schema-checked) here."""
    return load_config(
        path, tuple(overrides), init_config=lambda p: read_model_checkpoint(Path(p)).config
    )


def check_model_schema(path: Path, state: dict[str, Any]) -> ModelCheckpoint:
    """The schema check of a loaded checkpoint's model part; `CheckpointError` names the file
    and the first entry that is wrong (a checkpoint is input: it may have been edited)."""
    cfg = checkpoint_config(state, path)
    tokenizer = checkpoint_tokenizer(state, path)
    _check_fingerprint(state, tokenizer, path)
    _check_model_tensors(state.get("model"), expected_tensors(cfg, tokenizer, path), path)
    return ModelCheckpoint(path=path, state=state, config=cfg, tokenizer=tokenizer)


def checkpoint_step(state: dict[str, Any]) -> int | None:
    """The update a checkpoint's weights come from: its training progress, or for a release
    checkpoint (`nmt export --to nmt`, progress dropped) the step it recorded; None for an
    averaged or foreign file."""
    train_state = state.get("train_state")
    release = state.get("release")
    if isinstance(train_state, dict):
        step = train_state.get("step")
    else:
        step = release.get("from_step") if isinstance(release, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def checkpoint_config(state: dict[str, Any], path: Path) -> ExperimentConfig:
    """The resolved config stored in a checkpoint, validated again: it is input too."""
    from nmt.errors import ConfigError

    raw = state.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{path} is not an nmt model checkpoint: its config is "
            f"{_kind(raw) if 'config' in state else 'missing'}, not a mapping"
        )
    try:
        return config_from_dict(raw, source=str(path))
    except ConfigError as exc:
        raise CheckpointError(f"{path} holds an invalid configuration:\n{exc}") from None


def checkpoint_tokenizer(state: dict[str, Any], path: Path) -> Tokenizer:
    """The SentencePiece models stored in a checkpoint (`spm`: src and tgt byte tensors)."""
    spm = state.get("spm")
    if not isinstance(spm, dict):
        raise CheckpointError(
            f"{path} is not an nmt model checkpoint: its spm entry is "
            f"{_kind(spm) if 'spm' in state else 'missing'}, not a mapping of src and tgt"
        )
    for side in ("src", "tgt"):
        if not _is_byte_tensor(spm.get(side)) or spm[side].numel() == 0:
            found = _kind(spm[side]) if side in spm else "missing"
            raise CheckpointError(
                f"{path}: spm.{side} is {found}; expected the SentencePiece model as a "
                "non-empty 1-D uint8 tensor"
            )
    try:
        return Tokenizer(tensor_to_bytes(spm["src"]), tensor_to_bytes(spm["tgt"]))
    except NmtError as exc:
        raise CheckpointError(f"{path}: spm holds {exc}") from None


def _check_fingerprint(state: dict[str, Any], tokenizer: Tokenizer, path: Path) -> None:
    found = state.get("fingerprint")
    if not isinstance(found, dict) or set(found) != {"tokenizer", "data"}:
        raise CheckpointError(
            f"{path}: fingerprint is {_kind(found)}; expected a mapping of tokenizer and data"
        )
    data = found["data"]
    if data is not None and not (isinstance(data, str) and _SHA256.fullmatch(data)):
        raise CheckpointError(f"{path}: fingerprint.data is {_kind(data)}, not a sha256")
    if found["tokenizer"] != tokenizer_fingerprint(tokenizer.src_model, tokenizer.tgt_model):
        raise CheckpointError(
            f"{path}: fingerprint.tokenizer does not match the SentencePiece models stored "
            "with it (the file was altered after it was written)"
        )


def expected_tensors(
    cfg: ExperimentConfig, tokenizer: Tokenizer, path: Path
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor in the state_dict of the model the config's
    architecture and the vocabulary sizes build; computed on the meta device (no memory)."""
    try:
        with torch.device("meta"):
            model = model_for(cfg, tokenizer)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: its config builds no model ({exc})") from None
    return {name: (tuple(t.shape), t.dtype) for name, t in model.state_dict().items()}


def _check_model_tensors(
    model: Any, expected: dict[str, tuple[tuple[int, ...], torch.dtype]], path: Path
) -> None:
    if not isinstance(model, dict):
        raise CheckpointError(f"{path}: model is {_kind(model)}; expected the model's tensors")
    missing = sorted(set(expected) - set(model))
    extra = sorted(map(str, set(model) - set(expected)))
    if missing or extra:
        raise CheckpointError(
            f"{path}: the model tensors do not match the config's architecture "
            f"(missing: {_names(missing)}; unexpected: {_names(extra)})"
        )
    for name, (shape, dtype) in expected.items():
        value = model[name]
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            raise CheckpointError(f"{path}: model tensor {name} is {_kind(value)}")
        if tuple(value.shape) != shape:
            raise CheckpointError(
                f"{path}: model tensor {name} has shape {tuple(value.shape)}; the config's "
                f"architecture needs {shape}"
            )
        if value.is_floating_point() != dtype.is_floating_point or (
            not dtype.is_floating_point and value.dtype != dtype
        ):
            raise CheckpointError(
                f"{path}: model tensor {name} is {value.dtype}; expected {dtype}"
                + (" (or another float type)" if dtype.is_floating_point else "")
            )
        _check_weights_are_numbers(name, value, path)


def _check_weights_are_numbers(name: str, value: torch.Tensor, path: Path) -> None:
    """One NaN in a LayerNorm weight makes every output empty, silently: weights with a
    non-finite value are refused when read, whoever reads them (translate, evaluate, serve,
    export, average, resume, init_from, import)."""
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise CheckpointError(
            f"{path}: model tensor {name} holds {bad} non-finite values (NaN or inf); "
            "these weights cannot translate: use another checkpoint"
        )


def _is_byte_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1


def _kind(value: Any) -> str:
    """A value of a malformed checkpoint in a few words: its type, and its shape or length."""
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple, dict, str, bytes)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"{type(value).__name__} {value!r}"[:80]


def _names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return (shown + more) or "none"


# --------------------------------------------------------------------------- the model


def model_for(cfg: ExperimentConfig, tokenizer: Tokenizer) -> Transformer:
    """The (freshly initialised) model of `cfg`'s architecture for `tokenizer`'s vocabularies:
    the one recipe training and decoding share."""
    return Transformer(
        cfg.model,
        src_vocab_size=tokenizer.src_vocab_size,
        tgt_vocab_size=tokenizer.tgt_vocab_size,
        pad_id=PAD_ID,
    )


def load_trained_model(
    path: Path, *, device: str | torch.device = "cpu"
) -> tuple[Transformer, Tokenizer, ExperimentConfig]:
    """The float32 model of a checkpoint (on `device`, in eval mode), its tokenizer and its
    resolved config; everything read is schema-checked first."""
    from nmt.runtime import resolve_device

    device = resolve_device(device)  # an unusable device is refused before the file is read
    checkpoint = read_model_checkpoint(Path(path))
    model = model_for(checkpoint.config, checkpoint.tokenizer)
    model.load_state_dict(checkpoint.state["model"])
    return model.to(device).eval(), checkpoint.tokenizer, checkpoint.config
