"""Recognise a file given where a checkpoint belongs, so that the error can say what it got.

torch.save writes a zip archive (b"PK\\x03\\x04"); a legacy torch.save file or a pickle starts
with the pickle opcode PROTO (b"\\x80"). Any other file cannot be a checkpoint. torch's own
error for such a file ("Unsupported operand 35", "invalid load key") would not tell the user
that they passed a config or a text file by mistake.
"""

from __future__ import annotations

import re
from pathlib import Path

from nmt.errors import CheckpointError

CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")
_SNIFF_BYTES = 64 * 1024
# A line that starts a section of an nmt config: `model:`, `train:`, ...
_CONFIG_LINE = re.compile(r"^(name|run_dir|data|model|train|decode)\s*:", re.MULTILINE)
_WANTED = "give a .pt checkpoint written by nmt train (runs/<name>/checkpoints/*.pt)"


def check_checkpoint_file(path: Path) -> None:
    """Raise CheckpointError saying what `path` is if it cannot be a checkpoint.

    Quiet for a file that starts like a checkpoint and for one that cannot be opened: the
    loader then reports a corrupt, missing or unreadable file itself.
    """
    try:
        with open(path, "rb") as f:
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
