"""A run's checkpoint files: keep-last-N, best, fallback to an older file, averaging.

The format of one file (save / load as plain data, schema, upgrades) is `nmt.checkpoint`;
this module is the policy over a run's files. `CheckpointManager` keeps `step_<N>.pt` (the
newest `keep_last`), `last.pt` (the newest save) and `best.pt` (the best validation so far);
a resume takes the newest file that loads and passes the caller's check, falling back to
older ones. A writer killed mid-save (SIGKILL, power loss) leaves its temporary file behind;
`CheckpointManager.remove_stale_temporaries` deletes those. `average_checkpoints` averages
the weights of checkpoints of one architecture and one tokenizer.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nmt.checkpoint import (
    ModelCheckpoint,
    link_or_copy,
    load_checkpoint,
    read_model_checkpoint,
    refuse_duplicates,
    replace_atomically,
    save_checkpoint,
)
from nmt.config import NOT_ARCHITECTURE, config_to_dict
from nmt.errors import CheckpointError, NmtError
from nmt.files import file_key, remove_stale_temporaries

# Fields that belong to one training trajectory and are meaningless for an averaged model.
_TRAJECTORY_KEYS = ("optimizer", "scheduler", "scaler")

_STEP_FILE = re.compile(r"step_(\d+)\.pt")


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
        return remove_stale_temporaries(self.directory)

    def _point(self, name: Path, target: Path) -> None:
        # `last.pt` / `best.pt` are names, not files of their own: a symbolic link there (a
        # user's `ln -s step_20.pt best.pt`) is replaced, never written through, which would
        # overwrite the step file it points at with another step's weights.
        replace_atomically(name, lambda tmp: link_or_copy(target, tmp), through_links=False)

    def _prune(self) -> None:
        for old in self.step_checkpoints()[: -self.keep_last]:
            try:
                old.unlink(missing_ok=True)
            except OSError as exc:  # a leftover file is no reason to stop training
                print(f"warning: cannot delete {old}: {exc.strerror or exc}", file=sys.stderr)


# --------------------------------------------------------------------------- averaging


def average_command(
    checkpoints: list[Path], output: Path, *, last: int | None, run_dir: Path | None
) -> str:
    """`nmt average`: the given checkpoints, or the last `last` of `run_dir`, averaged into
    `output`; returns the summary line."""
    paths = list(checkpoints)
    if last is not None:
        if run_dir is None:
            raise NmtError("--last needs --run-dir")
        paths = last_step_checkpoints(run_dir / "checkpoints", last)
        if not paths:
            raise NmtError(f"no step checkpoints in {run_dir / 'checkpoints'}")
    if not paths:
        raise NmtError("give checkpoints to average, or --last N --run-dir DIR")
    check_average_output(paths, output)
    save_checkpoint(output, average_checkpoints(paths))
    return f"averaged {len(paths)} checkpoints into {output}: {', '.join(p.name for p in paths)}"


def last_step_checkpoints(directory: Path, count: int) -> list[Path]:
    """The last `count` step checkpoints of a run's checkpoints directory, oldest first:
    what `nmt average --last` and `train.average_last` average."""
    return CheckpointManager(directory, keep_last=count).step_checkpoints()[-count:]


def check_average_output(paths: list[Path], output: Path) -> None:
    """Refuse an output that is one of the inputs: a run's step file replaced by averaged
    weights (no optimizer state) is a checkpoint lost, not a new file."""
    key = file_key(output)
    for path in paths:
        if key is not None and file_key(path) == key:
            raise CheckpointError(
                f"--output {output} is one of the checkpoints being averaged ({path}); "
                "write the average to another file"
            )


def average_checkpoints(paths: list[Path]) -> dict[str, Any]:
    """The checkpoint whose model weights are the mean of those in `paths`.

    For every floating-point tensor k: avg_k = (1/n) * sum_i w_i[k], summed in float64 and
    cast back to the tensor's dtype. Other entries (integer buffers) come from the first
    checkpoint, as do all other fields (config, spm, fingerprint, progress, ...), except
    optimizer, scheduler and scaler state, which belong to one trajectory and are dropped.
    `averaged_from` lists the paths. Checkpoints are loaded one at a time, each
    schema-checked; checkpoints of another tokenizer or architecture are refused (their
    mean would be a model of nothing).
    """
    if not paths:
        raise CheckpointError("no checkpoints to average")
    first = read_model_checkpoint(paths[0])  # a file that is no checkpoint is named first
    refuse_duplicates(paths)
    reference = first.state["model"]
    sums = {k: v.to(torch.float64, copy=True) for k, v in reference.items() if _is_float(v)}
    for path in paths[1:]:
        other = read_model_checkpoint(path)
        check_averageable(first, other)
        for name, total in sums.items():
            total.add_(other.state["model"][name].to(torch.float64))
    model = {
        name: sums[name].div_(len(paths)).to(value.dtype) if name in sums else value
        for name, value in reference.items()
    }
    averaged = {k: v for k, v in first.state.items() if k not in _TRAJECTORY_KEYS}
    averaged["model"] = model
    averaged["averaged_from"] = [str(p) for p in paths]
    return averaged


def check_averageable(first: ModelCheckpoint, other: ModelCheckpoint) -> None:
    """Refuse, naming both files and the difference, to average `other` with `first`."""
    where = f"cannot average {other.path} with {first.path}"
    if other.fingerprint["tokenizer"] != first.fingerprint["tokenizer"]:
        raise CheckpointError(
            f"{where}: they have different tokenizers (SentencePiece fingerprints "
            f"{other.fingerprint['tokenizer'][:12]} and {first.fingerprint['tokenizer'][:12]})"
        )
    changed = _architecture_changes(first, other)
    if changed:
        raise CheckpointError(f"{where}: their architectures differ ({changed})")
    _check_same_layout(first.state["model"], other.state["model"], where=where)


def _architecture_changes(first: ModelCheckpoint, other: ModelCheckpoint) -> str:
    ours, theirs = config_to_dict(first.config)["model"], config_to_dict(other.config)["model"]
    return ", ".join(
        f"model.{key} {theirs[key]!r} there, {ours[key]!r} in the first"
        for key in ours
        if key not in NOT_ARCHITECTURE and ours[key] != theirs[key]
    )


def _is_float(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def _check_same_layout(reference: dict[str, Any], weights: dict[str, Any], *, where: str) -> None:
    missing, extra = sorted(set(reference) - set(weights)), sorted(set(weights) - set(reference))
    if missing or extra:
        raise CheckpointError(
            f"{where}: parameter names differ "
            f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'})"
        )
    for name, value in reference.items():
        if tuple(weights[name].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{where}: {name} has shape {tuple(weights[name].shape)} there "
                f"but {tuple(value.shape)} in the first"
            )
