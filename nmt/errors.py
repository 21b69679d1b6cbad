"""Errors the user can fix. The CLI prints them as one message and exits non-zero.

Anything that is *not* an `NmtError` is a bug in nmt and keeps its traceback.
"""

from __future__ import annotations


class NmtError(Exception):
    """Base class: a problem with the user's input, files or environment."""

    exit_code = 2


class ConfigError(NmtError):
    """The configuration (YAML file or overrides) is invalid; carries every problem found."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"invalid configuration{where}:"] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class DataError(NmtError):
    """A corpus file is missing, unreadable, misaligned or empty."""


class CheckpointError(NmtError):
    """A checkpoint is missing, corrupt, or of an unsupported format."""


class TrainingError(NmtError):
    """Training cannot go on (e.g. too many non-finite losses in a row)."""


class DistributedError(NmtError):
    """Another process of a distributed run died or stopped responding."""


class OutputError(NmtError):
    """A file cannot be written: no space left, a read-only file system, no permission."""
