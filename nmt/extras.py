"""Optional extras (pyproject's optional-dependencies), imported only when a feature asks."""

from __future__ import annotations

import importlib
from types import ModuleType

from nmt.errors import NmtError

# extra name in pyproject.toml -> the module it provides
EXTRAS = {"ctranslate2": "ctranslate2", "huggingface": "transformers", "tensorboard": "tensorboard"}


def require_extra(extra: str, command: str) -> ModuleType:
    """Import the module of an optional extra, or refuse in one line naming the install."""
    try:
        return importlib.import_module(EXTRAS[extra])
    except ImportError:
        raise NmtError(f'{command} needs the optional extra: pip install "nmt[{extra}]"') from None
