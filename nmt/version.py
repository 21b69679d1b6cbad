"""The version of nmt (pyproject.toml's `version`): what checkpoints and prepared data record
about their writer."""

__version__ = "0.1.0"
