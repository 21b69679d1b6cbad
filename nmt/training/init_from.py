"""Starting a new run from a trained model's weights (`train.init_from`): fine-tuning.

The run is new in every other way: a fresh optimizer, schedule, data position and RNG
stream. The checkpoint may be any model checkpoint (one `nmt train` wrote, an averaged one,
a release from `nmt export --to nmt`, an imported one): it is read through
`nmt.checkpoint.read_model_checkpoint` (weights only, schema checked). The model's
architecture and tokenizer come with the weights: `nmt.checkpoint.load_run_config` takes
those keys from the checkpoint (rules in `nmt.config.inheritance`), `nmt prepare` copies its
SentencePiece models, and `load_init_weights` checks both again, since the file may have
changed since.

A resumed run continues from its own checkpoints and never reads the init checkpoint's
weights again; its checkpoints and results record where it started (`InitSource`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from nmt.checkpoint import checkpoint_step, read_model_checkpoint, tokenizer_fingerprint
from nmt.config import ExperimentConfig, init_conflicts
from nmt.data.text import sha256_of
from nmt.data.tokenizer import Tokenizer
from nmt.errors import CheckpointError, TrainingError


@dataclasses.dataclass(frozen=True)
class InitSource:
    """The checkpoint a run started from, as its checkpoints record it (`init_from`)."""

    path: str  # resolved: a link such as best.pt moves on, so step and sha256 say which
    step: int | None  # None for an averaged or foreign checkpoint
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_init_weights(
    cfg: ExperimentConfig, tokenizer: Tokenizer
) -> tuple[dict[str, torch.Tensor], InitSource]:
    """The model weights of the checkpoint `cfg.train.init_from` names, and its identity.

    Refused (`TrainingError`): a checkpoint whose architecture is not `cfg`'s (keys shown
    config vs checkpoint value), or whose SentencePiece models are not those of the run's
    prepared data (`tokenizer`), and a file replaced while it was read.
    """
    path = Path(cfg.train.init_from)
    before = _file_state(path)
    source = read_model_checkpoint(path)
    identity = InitSource(str(path.resolve()), checkpoint_step(source.state), sha256_of(path))
    if _file_state(path) != before:
        raise TrainingError(
            f"train.init_from: {path} was replaced while it was read (is training writing "
            "it?); train again, or give a step_N.pt"
        )
    conflicts = init_conflicts(cfg, source.config)
    if conflicts:
        raise TrainingError(
            f"train.init_from: {path} no longer matches the config read from it: "
            f"{'; '.join(conflicts)}; run the command again"
        )
    theirs = source.tokenizer
    if tokenizer_fingerprint(theirs.src_model, theirs.tgt_model) != tokenizer_fingerprint(
        tokenizer.src_model, tokenizer.tgt_model
    ):
        raise TrainingError(
            f"train.init_from: the prepared data in {cfg.run_path / 'data'} was not encoded "
            f"with the SentencePiece models of {path}; run `nmt prepare` with train.init_from "
            "set (it copies the checkpoint's models; add --force if it refuses), then train"
        )
    return source.state["model"], identity


def restored_init_source(path: Path, state: dict[str, Any]) -> dict[str, Any] | None:
    """The `init_from` record of a checkpoint being resumed (None: a run from scratch, or a
    checkpoint written before the record existed); `CheckpointError` if malformed."""
    record = state.get("init_from")
    if record is None:
        return None
    fields = {f.name for f in dataclasses.fields(InitSource)}
    if not isinstance(record, dict) or set(record) != fields:
        raise CheckpointError(
            f"cannot resume from {path}: init_from is malformed; expected a mapping of "
            f"{', '.join(sorted(fields))}"
        )
    return record


def _file_state(path: Path) -> tuple[int, ...] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
