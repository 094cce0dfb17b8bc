"""The package's layers, checked from the source: imports run down the layers, no module
imports another module's private names, and no import cycle exists (a function-level import
counts; an import only for type checking does not).

Layers, lowest first (``docs/architecture.md``)::

    errors, events, fsync, heap    the error tree, progress events, the directory fsync,
                                   glibc's heap thresholds
    rules, sample, credentials,    pure rules; leaf helpers
    locations, forkserver
    remote                         inputs in object storage (no numpy: the CLI starts
                                   reading one before its own imports)
    pipeline | tiktok | sandbox    siblings: none imports another
    store | dask                   the journal and snapshots | prepare on a Dask cluster
    jobs                           the sync job
    cli, asyncsync (the façade)    faces: nothing imports them (the façade is imported by
                                   the client only for the version)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import asyncsync

PACKAGE = Path(asyncsync.__file__).parent

LAYERS: dict[str, int] = {
    "errors": 0,
    "events": 0,
    "fsync": 0,
    "heap": 0,
    "rules": 1,
    "sample": 1,
    "credentials": 1,
    "locations": 1,
    "forkserver": 1,
    "remote": 2,
    "pipeline": 3,
    "tiktok": 3,
    "sandbox": 3,
    "store": 4,
    "dask": 4,
    "jobs": 5,
    "cli": 6,
    "__main__": 7,
}
FACADE_USERS = {"asyncsync.tiktok.client", "asyncsync.cli"}
"""Modules that read ``asyncsync.__version__`` from the façade (lazily)."""


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, name: str) -> Iterator[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every runtime import in ``path``."""
    is_package = path.name == "__init__.py"

    def walk(node: ast.AST) -> Iterator[tuple[str, list[str], int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    yield from walk(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, [], child.lineno
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = name.split(".")
                    pkg = pkg if is_package else pkg[:-1]
                    pkg = pkg[: len(pkg) - (child.level - 1)]
                    base = ".".join([*pkg, base] if base else pkg)
                yield base, [a.name for a in child.names], child.lineno
            yield from walk(child)

    yield from walk(ast.parse(path.read_text(encoding="utf-8")))


def layer_of(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if parts[0] != "asyncsync":
        return None
    if len(parts) == 1:
        return "asyncsync", 7
    top = parts[1]
    return top, LAYERS[top]


def internal_edges() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, names, _ in imports(path, name):
            if not target.startswith("asyncsync"):
                continue
            # ``from pkg import module`` imports the submodule.
            for n in names:
                if f"{target}.{n}" in mods:
                    edges[name].add(f"{target}.{n}")
            if target in mods:
                edges[name].add(target)
    return edges


def test_every_top_level_module_has_a_layer() -> None:
    tops = {m.split(".")[1] for m in modules() if m != "asyncsync"}
    assert tops <= set(LAYERS), tops - set(LAYERS)


def test_imports_run_down_the_layers_and_siblings_do_not_import_each_other() -> None:
    wrong = []
    for name, path in modules().items():
        here = layer_of(name)
        assert here is not None
        for target, _, line in imports(path, name):
            there = layer_of(target)
            if there is None or there[0] == here[0]:
                continue
            if there[0] == "asyncsync" and name in FACADE_USERS:
                continue
            if there[1] >= here[1]:
                wrong.append(f"{name}:{line} imports {target}")
    assert wrong == []


def test_no_module_imports_private_names_of_another() -> None:
    wrong = []
    for name, path in modules().items():
        package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
        for target, names, line in imports(path, name):
            if not target.startswith("asyncsync"):
                continue
            owner = target.rsplit(".", 1)[0]
            private_module = any(p.startswith("_") and p != "__init__" for p in target.split("."))
            if private_module and owner != package and not target.endswith("__main__"):
                wrong.append(f"{name}:{line} imports the private module {target}")
            wrong += [
                f"{name}:{line} imports {target}.{n}"
                for n in names
                if n.startswith("_") and not n.startswith("__") and target != name
            ]
    assert wrong == []


def test_no_import_cycle() -> None:
    edges = internal_edges()
    # A package's __init__ that re-exports its submodules is not a cycle with them.
    for name in edges:
        edges[name] = {t for t in edges[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []
