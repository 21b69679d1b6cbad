"""The package's layering: what translates a sentence does not depend on what trains a model.
Decoding, export/import, the server and the Python API import nothing from `nmt.training`
(the checkpoint format both sides read lives in `nmt.checkpoint`), so a deployment carries no
trainer and a change to training cannot break translation through a back door."""

from __future__ import annotations

import ast
from pathlib import Path

import nmt

PACKAGE = Path(nmt.__file__).resolve().parent
DECODING_SIDE = ["decoding", "interop", "serve", "api.py"]


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` in the file names (lazy ones included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_decoding_side_imports_nothing_from_training():
    files = [
        path
        for part in DECODING_SIDE
        for path in ([PACKAGE / part] if part.endswith(".py") else (PACKAGE / part).rglob("*.py"))
    ]
    assert len(files) > 10
    offending = {
        str(path.relative_to(PACKAGE)): sorted(
            m for m in imported_modules(path) if m.startswith("nmt.training")
        )
        for path in files
    }
    assert {k: v for k, v in offending.items() if v} == {}
