"""One small model for the server tests: the decoding tests' tiny model (trained once per
session for both, from the first lines of the real Multi30k de-en files), decoding short
outputs. Its translations are poor but deterministic. The servers themselves are started by
the test modules (tests/serve/_server.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Short outputs (a half-trained model rarely ends a sentence): decoding stays quick.
SHORT_OUTPUTS = {"max_len_a": 0.5, "max_len_b": 2}


@pytest.fixture(scope="session")
def serve_checkpoint(tiny_run, tmp_path_factory) -> Path:
    """The tiny model's last.pt, its decode config set to SHORT_OUTPUTS."""
    from nmt.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(tiny_run.checkpoint)
    state["config"]["decode"] |= SHORT_OUTPUTS
    path = tmp_path_factory.mktemp("serve_run") / "last.pt"
    save_checkpoint(path, state)
    return path
