"""What every export reads: the model, tokenizer and config of an nmt checkpoint; and the
optional extras, imported only when asked for.

Checkpoint loading goes through `load_source` alone, so that when checkpoint reading moves
(nmt/checkpoint.py) only the imports here change.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from nmt.config import ExperimentConfig
from nmt.data.tokenizer import Tokenizer
from nmt.errors import NmtError
from nmt.model.transformer import Transformer

# extra name in pyproject.toml -> the module it provides
EXTRAS = {"ctranslate2": "ctranslate2", "huggingface": "transformers"}


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
    from nmt.decoding.translator import load_trained_model
    from nmt.training.checkpoint import load_checkpoint

    model, tokenizer, cfg = load_trained_model(Path(path), device="cpu")
    checkpoint = load_checkpoint(Path(path), map_location="cpu")
    return ExportSource(Path(path), model, tokenizer, cfg, checkpoint)


def require_extra(extra: str, command: str) -> ModuleType:
    """Import the module of an optional extra, or refuse in one line naming the install."""
    try:
        return importlib.import_module(EXTRAS[extra])
    except ImportError:
        raise NmtError(f'{command} needs the optional extra: pip install "nmt[{extra}]"') from None
