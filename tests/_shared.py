"""Helpers that several test directories share, written once (import them as
`from _shared import ...`: tests/ is on sys.path, as for `_cli`)."""

from __future__ import annotations


def assert_equal_tree(a, b, where: str = "state") -> None:
    """Bitwise equality of nested checkpoint data (tensors compared with torch.equal)."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_equal_tree(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def tiny_data_config(**overrides):
    """The config of a small `prepare` (tiny model, 500 pieces, one test split), with dotted
    `overrides` ({"data.vocab_size": 400})."""
    from nmt.config import load_config

    items = [
        "name=t",
        "data.vocab_size=500",
        "data.test_splits=[test_2016_flickr]",
        "model.preset=tiny",
    ] + [f"{k}={v}" for k, v in overrides.items()]
    return load_config(None, items)
