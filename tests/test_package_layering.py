"""The package's layers: imports run downward only, and no module imports itself in a circle.

LAYERS lists every part of nmt/, bottom to top. A module may import from its own layer or
below, never above; the peers of one layer marked `peers` (training, interop, serve) do not
import each other. Every import counts: module-level and function-level, `import x`,
`from x import y` and relative imports; `import nmt` and `from nmt import __version__` import
the package itself, whose `__init__.py` sits in the api layer. Imports under
`if TYPE_CHECKING:` are exempt: they never run.

Every module of nmt/ must be placed in the table: a new module fails here until it is.

What translates a sentence does not depend on what trains a model: decoding, export/import,
the server and the Python API import nothing from `nmt.training` (the checkpoint format both
sides read lives in `nmt.checkpoint`), so a deployment carries no trainer and a change to
training cannot break translation through a back door.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import nmt

PACKAGE = Path(nmt.__file__).resolve().parent

# Bottom to top: (name, module prefixes, whether its parts are peers that may not import
# each other). A prefix covers the module and everything below it ("nmt.data" covers
# nmt.data.prepare); "nmt" alone is the package's __init__.py.
LAYERS: list[tuple[str, tuple[str, ...], bool]] = [
    ("base", ("nmt.errors", "nmt.files", "nmt.memory", "nmt.extras", "nmt.version"), False),
    ("config", ("nmt.config", "nmt.runtime"), False),
    ("data", ("nmt.data",), False),
    ("model", ("nmt.model",), False),
    ("checkpoint", ("nmt.checkpoint",), False),
    ("decoding", ("nmt.decoding",), False),
    ("evaluation", ("nmt.evaluation",), False),
    ("peers", ("nmt.training", "nmt.interop", "nmt.serve"), True),
    ("pipeline", ("nmt.pipeline", "nmt.backends", "nmt.report", "nmt.plotting"), False),
    ("api", ("nmt.api", "nmt"), False),
    ("cli", ("nmt.cli",), False),
]

# (importer, imported) pairs that run against LAYERS today; one line each says what.
DECODING_SIDE = ("nmt.decoding", "nmt.interop", "nmt.serve", "nmt.api")


@dataclass(frozen=True)
class Place:
    layer: int
    prefix: str  # the table entry that holds the module (its peer group in a peers layer)


def place_of(module: str) -> Place | None:
    """The most specific table entry covering `module` ("nmt.data.x" -> "nmt.data", not
    "nmt"), or None where the table has no place for it."""
    best = None
    for layer, (_, prefixes, _) in enumerate(LAYERS):
        for prefix in prefixes:
            covers = module == prefix or (prefix != "nmt" and module.startswith(prefix + "."))
            if covers and (best is None or len(prefix) > len(best.prefix)):
                best = Place(layer, prefix)
    return best


def may_import(importer: str, imported: str) -> bool:
    source, target = place_of(importer), place_of(imported)
    if source is None or target is None:
        return False
    if target.layer < source.layer:
        return True
    if target.layer > source.layer:
        return False
    peers = LAYERS[source.layer][2]
    return not peers or source.prefix == target.prefix


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None) if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(tree: ast.AST):
    """Every Import/ImportFrom in the tree, at any depth, except under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if is_type_checking_block(node):
            for other in node.orelse:
                yield from import_nodes(ast.Module(body=[other], type_ignores=[]))
            continue
        yield from import_nodes(node)


def absolute_base(module: str, node: ast.ImportFrom) -> str:
    """The module `from <base> import ...` names, relative imports resolved against `module`."""
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    package = module.split(".")
    if not is_package:
        package = package[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """The nmt modules `module` imports: `from pkg import sub` names the submodule where one
    exists, else the package itself (`from nmt import __version__` is the package)."""
    found = set()
    for node in import_nodes(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = absolute_base(module, node)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            found.add(submodule if submodule in MODULES else base)
    return {name for name in found if name == "nmt" or name.startswith("nmt.")}


GRAPH: dict[str, set[str]] = {module: imports_of(module) - {module} for module in MODULES}


def violations() -> set[tuple[str, str]]:
    return {
        (importer, imported)
        for importer, targets in GRAPH.items()
        for imported in targets
        if not may_import(importer, imported)
    }


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def test_every_module_has_a_place_in_the_table():
    assert len(MODULES) > 50
    assert [m for m in MODULES if place_of(m) is None] == []


def test_imports_run_down_the_layers():
    assert sorted(violations()) == []


def test_no_module_imports_itself_through_a_circle():
    assert strongly_connected_components(GRAPH) == []


def test_the_decoding_side_imports_nothing_from_training():
    side = [m for m in MODULES if any(m == p or m.startswith(p + ".") for p in DECODING_SIDE)]
    assert len(side) > 10
    offending = {m: sorted(t for t in GRAPH[m] if t.startswith("nmt.training")) for m in side}
    assert {m: t for m, t in offending.items() if t} == {}


def test_the_checker_sees_every_kind_of_import():
    """The parser behind the checks, on the forms it must not miss."""
    tree = ast.parse(
        "import nmt.data.text\n"
        "from nmt import __version__, files\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import nmt.cli\n"
        "else:\n"
        "    import nmt.memory\n"
        "def f():\n"
        "    from . import search\n"
        "    from ..model import transformer\n"
    )
    nodes = list(import_nodes(tree))
    assert len(nodes) == 6  # nmt.cli, under TYPE_CHECKING, is left out
    module = "nmt.decoding.engine"
    relative = [absolute_base(module, n) for n in nodes if isinstance(n, ast.ImportFrom)]
    assert relative == ["nmt", "typing", "nmt.decoding", "nmt.model"]
    assert place_of("nmt") == Place(9, "nmt") and place_of("nmt.data.text").prefix == "nmt.data"
    assert not may_import("nmt.training.trainer", "nmt.interop.source")
    assert may_import("nmt.training.trainer", "nmt.training.step")
    assert not may_import("nmt.data.prepare", "nmt.checkpoint")
