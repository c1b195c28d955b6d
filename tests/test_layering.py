"""Layering of ``headend``, read from its source with ``ast`` (nothing is imported).

The packages are the folders under ``src/headend`` (``wire``, ``ingest``, ``store``,
...); an edge ``a -> b`` is any import of ``headend.b`` in a module of ``a``, at module
level or inside a function. Imports under ``if TYPE_CHECKING:`` do not count.

* The graph has no cycle; in particular wire and ingest, and analytics and vee, import
  each other one way only (decoders hand batches to ingest; analytics reads VEE).
* No module imports a private module or a private name (``_x``) of another package:
  what one package offers the others is in its public modules. The root package's own
  private modules (``headend._allocator``) belong to all of it.
* analytics, store, serve and bus probe nothing with ``hasattr``: what a store can do is
  in its port (``headend.store.base``), what an ingest worker gets back is an
  ``IngestResult``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "headend"


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. headend.ingest.pipeline
    line: int
    target: str  # what is imported: headend.wire.batch or headend.wire.batch.Decoded

    @property
    def package(self) -> str:
        return _package(self.module)

    @property
    def target_package(self) -> str:
        return _package(self.target)

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def _package(dotted: str) -> str:
    """``headend.wire.csvfmt._text`` -> ``wire``; root modules (``headend``,
    ``headend._allocator``) -> ``""``."""
    parts = dotted.split(".")
    if len(parts) < 2 or not (SRC / parts[1]).is_dir():
        return ""
    return parts[1]


def _module_name(path: Path) -> str:
    parts = ["headend", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                skip.update(id(n) for n in ast.walk(stmt))
    return skip


def _imports_of(path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    return _imports_in(tree, _module_name(path), is_package=path.name == "__init__.py")


def _imports_in(tree: ast.AST, module: str, *, is_package: bool) -> list[Import]:
    """The imports of ``headend`` modules in ``tree`` (the source of ``module``)."""
    skip = _type_checking_nodes(tree)
    out: list[Import] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.extend(Import(module, node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package upwards
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                src = ".".join([*base, *([node.module] if node.module else [])])
            else:
                src = node.module or ""
            out.extend(Import(module, node.lineno, f"{src}.{a.name}") for a in node.names)
    return [i for i in out if i.target == "headend" or i.target.startswith("headend.")]


IMPORTS = [i for p in sorted(SRC.rglob("*.py")) for i in _imports_of(p)]


def _edges() -> dict[str, dict[str, list[Import]]]:
    edges: dict[str, dict[str, list[Import]]] = {}
    for i in IMPORTS:
        if i.package and i.target_package and i.package != i.target_package:
            edges.setdefault(i.package, {}).setdefault(i.target_package, []).append(i)
    return edges


def _cycles(edges: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """One cycle through each package that is on one (depth-first search)."""
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, {})):
            if nxt in path:
                cycle = path[path.index(nxt):] + [nxt]
                if not set(cycle) & done:
                    found.append(cycle)
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(node)

    for start in sorted(edges):
        if start not in done:
            visit(start, [start])
    return found


def test_the_source_is_read() -> None:
    """The walk sees the imports it is about (else every check below passes vacuously)."""
    edges = _edges()
    assert {"store", "wire"} <= set(edges["ingest"])
    assert "store" in edges["analytics"]
    assert len({i.module for i in IMPORTS}) > 100  # modules that import headend


def test_the_walk_counts_function_imports_and_not_type_checking_ones() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import headend.model\n"
        "if TYPE_CHECKING:\n"
        "    from headend.ingest import batch\n"
        "def f():\n"
        "    from headend.store._fs import locked\n"
        "from . import sibling\n")
    got = sorted(i.target for i in _imports_in(tree, "headend.wire.x", is_package=False))
    assert got == ["headend.model", "headend.store._fs.locked", "headend.wire.sibling"]


def test_the_package_graph_has_no_cycle() -> None:
    edges = _edges()
    cycles = _cycles(edges)
    detail = [" -> ".join(c) + ": " + "; ".join(str(i) for i in edges[c[-2]][c[-1]][:3])
              for c in cycles]
    assert detail == []


@pytest.mark.parametrize(("upper", "lower"), [("ingest", "wire"), ("analytics", "vee")])
def test_one_way_only(upper: str, lower: str) -> None:
    """``lower`` never imports ``upper`` (the way back that made the cycles)."""
    back = _edges().get(lower, {}).get(upper, [])
    assert [str(i) for i in back] == []


def _private(i: Import) -> bool:
    """Whether ``i`` reaches into another package's private module or name."""
    parts = i.target.split(".")[2:]  # below headend.<package>
    return any(p.startswith("_") and not p.startswith("__") for p in parts)


def test_no_private_module_of_another_package() -> None:
    bad = [str(i) for i in IMPORTS
           if i.target_package and i.package != i.target_package and _private(i)]
    assert bad == []


def test_private_check_sees_a_private_import() -> None:
    """The rule above flags the imports it is meant to (and not a package's own)."""
    assert _private(Import("headend.vee.versions", 1, "headend.store._fs.locked"))
    assert _private(Import("headend.analytics.shapes", 1, "headend.vee.grid._local"))
    assert not _private(Import("headend.vee.versions", 1, "headend.store.fs.locked"))
    assert not _private(Import("headend.store.x", 1, "headend.store.__init__"))


@pytest.mark.parametrize("package", ["analytics", "store", "serve", "bus"])
def test_no_hasattr_probe(package: str) -> None:
    found = []
    for path in sorted((SRC / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "hasattr"):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == []
