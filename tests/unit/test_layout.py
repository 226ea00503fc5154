"""The package layout: no import cycle in the library, and backends reached only through the registry.

Read from the source (AST), every ``import`` counted, also those inside functions, except
those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
LIBRARY = "field_encrypt"
BACKENDS = tuple(f"field_encrypt.backends.{kind}" for kind in ("sqlite", "postgres", "cosmos"))
ENGINE = ("field_encrypt.rotation", "field_encrypt.audit", "field_encrypt.cli")


def _modules(package: str) -> dict[str, Path]:
    """Every module of ``package`` under src/, by dotted name."""
    out: dict[str, Path] = {}
    for path in sorted((SRC / package).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The modules ``name`` imports at run time (a ``from m import x`` names ``m.x`` if a module)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield full if full in known else base
        stack.extend(ast.iter_child_nodes(node))


def _graph() -> dict[str, set[str]]:
    modules = _modules(LIBRARY)
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = _imports(tree, name, path.name == "__init__.py", known)
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
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
    return found


def _in(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_library_has_no_import_cycle() -> None:
    """No set of field_encrypt modules imports itself round in a circle, lazily or not."""
    assert _cycles(_graph()) == []


def test_the_engine_reaches_backends_only_through_the_registry() -> None:
    """The rotation engine, the audit chain and the CLI import no backend module directly."""
    graph = _graph()
    direct = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if _in(module, ENGINE)
        for target in targets
        if _in(target, BACKENDS)
    )
    assert direct == []


def test_the_checks_see_a_planted_cycle_and_a_direct_backend_import() -> None:
    """The cycle finder and the backend rule flag what they are there to catch."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from field_encrypt.backends.sqlite.db import SqliteDatabase\n")
    known = {"field_encrypt.backends.sqlite.db"}
    assert list(_imports(tree, "field_encrypt.rotation.x", False, known)) == [
        "field_encrypt.backends.sqlite.db"
    ]
    guarded = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import field_encrypt.backends\n"
    )
    assert "field_encrypt.backends" not in list(_imports(guarded, "m", False, known))
