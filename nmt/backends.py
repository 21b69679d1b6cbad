"""Which backend translates a model path: nmt's engine for checkpoints (one, or several as
an ensemble), CTranslate2 for a directory written by `nmt export --to ctranslate2`.

The choice sits above both `nmt.decoding` and `nmt.interop`, which know nothing of each
other; everything that loads a model to translate with comes through `load_backend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nmt.decoding.backend import TranslationBackend, require
from nmt.decoding.engine import Engine
from nmt.decoding.options import DecodeOptions
from nmt.errors import NmtError
from nmt.interop.ctranslate2 import CTranslate2Engine, is_ctranslate2_dir


def load_backend(
    paths: Sequence[Path] | Path, options: DecodeOptions = DecodeOptions()
) -> TranslationBackend:
    """The backend for `paths` (a checkpoint, several checkpoints, or one CTranslate2
    directory) decoding with `options`."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    exports = [p for p in paths if is_ctranslate2_dir(p)]
    if exports and len(paths) > 1:
        require(CTranslate2Engine, "ensembles", what=f"{exports[0]} is a CTranslate2 directory")
    if exports:
        return CTranslate2Engine.from_directory(paths[0], options)
    return Engine.from_checkpoints(paths, options)


def load_checkpoint_engine(path: Path, options: DecodeOptions, *, command: str) -> Engine:
    """nmt's own engine for `path`, for what only it can do (`command`, e.g. nmt score)."""
    if is_ctranslate2_dir(path):
        raise NmtError(f"{command} needs a checkpoint written by nmt train; {path} is not")
    return Engine.from_checkpoint(path, options)
