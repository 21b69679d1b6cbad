"""What every export reads: the model, tokenizer and config of an nmt checkpoint.

Checkpoint loading goes through `load_source` alone, which reads the file once through
nmt/checkpoint.py (schema-checked, as decoding reads it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmt.checkpoint import PROVENANCE_NAME
from nmt.config import ExperimentConfig
from nmt.data.tokenizer import Tokenizer
from nmt.errors import NmtError
from nmt.model.transformer import Transformer


@dataclass(frozen=True)
class ExportSource:
    """A trained model as an export reads it: float32 on the CPU, in eval mode."""

    path: Path
    model: Transformer
    tokenizer: Tokenizer
    config: ExperimentConfig
    checkpoint: dict[str, Any]  # the raw checkpoint (step, best score, ... for model cards)


def load_source(path: Path) -> ExportSource:
    """The checkpoint at `path`; a missing or invalid file is one NmtError naming it."""
    from nmt.checkpoint import model_for, read_model_checkpoint

    checkpoint = read_model_checkpoint(Path(path), map_location="cpu")
    model = model_for(checkpoint.config, checkpoint.tokenizer)
    model.load_state_dict(checkpoint.state["model"])
    return ExportSource(
        Path(path), model.eval(), checkpoint.tokenizer, checkpoint.config, checkpoint.state
    )


def write_provenance(source: ExportSource, out_dir: Path) -> None:
    """Record the checkpoint an export was made from (resolved path, step, sha256), so that
    results computed with the export name the model that made them, and the sha256 of every
    file the export holds so far (call it once they are written), which decoding checks:
    an export has no checksums of its own, and a flipped bit in model.bin translates."""
    import json

    from nmt.checkpoint import checkpoint_step
    from nmt.data.text import sha256_of

    step = checkpoint_step(source.checkpoint)
    files = {p.name: sha256_of(p) for p in sorted(Path(out_dir).iterdir()) if p.is_file()}
    record = {
        "path": str(source.path.resolve()),
        "step": step,
        "sha256": sha256_of(source.path),
        "files": files,
    }
    (Path(out_dir) / PROVENANCE_NAME).write_text(json.dumps(record, indent=2), encoding="utf-8")


def check_export_files(directory: Path) -> None:
    """Refuse an export whose files differ from the sha256s `write_provenance` recorded (a
    damaged or replaced model.bin, a missing vocabulary). An export without the record (made
    before it existed, or by a converter) cannot be checked and is used as it is."""
    import json

    from nmt.data.text import sha256_of

    record_path = Path(directory) / PROVENANCE_NAME
    if not record_path.is_file():
        return
    try:
        files = json.loads(record_path.read_text(encoding="utf-8")).get("files", {})
    except (ValueError, AttributeError, UnicodeDecodeError):
        files = None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise NmtError(f"{record_path}: malformed; export the checkpoint again")
    for name, expected in sorted(files.items()):
        path = Path(directory) / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise NmtError(f"{directory}: {name} is missing; export the checkpoint again")
        if sha256_of(path) != expected:
            raise NmtError(
                f"{path} does not match the sha256 that nmt export recorded in {record_path}: "
                "the file is damaged or was replaced; export the checkpoint again"
            )
