"""The package's modules import each other without a cycle, at module level.

The graph is read from the source (``ast``), not from ``sys.modules``: an edge is an import
statement at module level (inside a top-level ``try`` or ``if`` too), never one inside a function.
Imports under ``if TYPE_CHECKING:`` are kept apart. They run only for the type checker, so they
cannot make a cycle at import time, but one that points back along the runtime graph hides a
dependency running the wrong way, and fails the test as a cycle would.

Run as a script (``python tests/test_import_graph.py``) to print the graph.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "django_asyncjobs"


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    """``importer`` imports ``imported`` on ``line``; ``typing_only`` under TYPE_CHECKING."""

    importer: str
    imported: str
    line: int
    typing_only: bool


@functools.cache
def modules() -> dict[str, Path]:
    """Return every module of the package by dotted name, migrations left out."""
    found: dict[str, Path] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "migrations" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt], *, typing_only: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """Yield the import statements of *body* that run at import time (or for the type checker)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, typing_only
        elif isinstance(node, ast.If):
            yield from _module_level(
                node.body, typing_only=typing_only or _is_type_checking(node.test)
            )
            yield from _module_level(node.orelse, typing_only=typing_only)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _module_level(block, typing_only=typing_only)
            for handler in node.handlers:
                yield from _module_level(handler.body, typing_only=typing_only)


def _targets(node: ast.stmt, importer: str, *, is_package: bool, known: set[str]) -> set[str]:
    """Return the package modules *node* makes Python execute, beyond what already runs.

    Importing ``a.b.c`` runs the packages ``a`` and ``a.b`` first; those that contain the
    importer are already running, so they are not edges.
    """
    names: set[str] = set()
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = importer.split(".") if is_package else importer.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join([*base, node.module] if node.module else base)
        else:
            origin = node.module or ""
        names = {origin}
        names |= {f"{origin}.{alias.name}" for alias in node.names} & known
    running = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 1)}
    if is_package:
        running.add(importer)
    out: set[str] = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in known and prefix not in running:
                out.add(prefix)
    out.discard(importer)
    return out


@functools.cache
def edges() -> tuple[Edge, ...]:
    """Return every module-level import between two modules of the package."""
    found = modules()
    known = set(found)
    out: list[Edge] = []
    for name, path in found.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, typing_only in _module_level(tree.body, typing_only=False):
            for target in sorted(_targets(node, name, is_package=is_package, known=known)):
                out.append(
                    Edge(importer=name, imported=target, line=node.lineno, typing_only=typing_only)
                )
    return tuple(out)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def runtime_graph(all_edges: Sequence[Edge]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    for edge in all_edges:
        if not edge.typing_only:
            graph[edge.importer].add(edge.imported)
    return graph


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def backward_typing_imports(all_edges: Sequence[Edge]) -> list[Edge]:
    """Return the TYPE_CHECKING imports whose target imports the importer back at run time."""
    graph = runtime_graph(all_edges)
    return [e for e in all_edges if e.typing_only and reaches(graph, e.imported, e.importer)]


def test_the_graph_sees_the_package() -> None:
    """A parser that found nothing would pass every other test here."""
    all_edges = edges()
    assert len(modules()) > 30
    assert (
        Edge(
            importer=f"{PACKAGE}.models",
            imported=f"{PACKAGE}.status",
            line=_line_of(all_edges, f"{PACKAGE}.models", f"{PACKAGE}.status"),
            typing_only=False,
        )
        in all_edges
    )


def _line_of(all_edges: Sequence[Edge], importer: str, imported: str) -> int:
    return next(e.line for e in all_edges if e.importer == importer and e.imported == imported)


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_import_cycle_at_module_level(module: str) -> None:
    graph = runtime_graph(edges())
    component = next((c for c in cycles(graph) if module in c), None)
    if component is not None:
        inside = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
        pytest.fail(f"{module} is in an import cycle: " + "; ".join(inside))


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_type_checking_import_runs_backwards(module: str) -> None:
    backward = [e for e in backward_typing_imports(edges()) if e.importer == module]
    assert not backward, [
        f"{e.importer}:{e.line} imports {e.imported} under TYPE_CHECKING, which imports it back"
        for e in backward
    ]


if __name__ == "__main__":
    all_edges = edges()
    for edge in all_edges:
        flag = "  (TYPE_CHECKING)" if edge.typing_only else ""
        print(f"{edge.importer} -> {edge.imported}  line {edge.line}{flag}")
    print("\ncycles:")
    for component in cycles(runtime_graph(all_edges)):
        print("  " + ", ".join(component))
    print("\nTYPE_CHECKING imports running backwards:")
    for edge in backward_typing_imports(all_edges):
        print(f"  {edge.importer}:{edge.line} -> {edge.imported}")
    sys.exit(0)
