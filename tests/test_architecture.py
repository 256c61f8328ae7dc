"""The shape of the tree: sizes, private names, import cycles, who imports the driver.

A newcomer should be able to open the package and see its architecture; these
limits keep it that way (see the README's Design section).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pgactors

PACKAGE = Path(pgactors.__file__).parent
MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 450
MAX_FUNCTION_LINES = 80
# The driver's packages, imported only by ``pgactors.postgres``.
DRIVER = ("psycopg", "psycopg_pool")
# Underscore names that are public API of the standard library's named tuples.
NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_make"})


def modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path, ast.parse(path.read_text(), str(path))


def runtime_imports(name: str, path: Path, tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    """``(imported module or name, node)`` for every import outside ``if TYPE_CHECKING``."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

    def visit(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                yield from visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                yield f"{module}.{alias.name}", node
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(tree)


def test_modules_classes_and_functions_stay_small() -> None:
    too_big = []
    for name, path, tree in modules():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            too_big.append(f"module {name}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                if size > limit:
                    too_big.append(f"{name}.{node.name}: {size} lines")
    assert too_big == []


def test_no_private_name_crosses_a_module() -> None:
    crossings = []
    for name, _, tree in modules():
        # Names this module defines: its own private attributes may be used on any object.
        defined = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                defined.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                crossings += [
                    f"{name} imports {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
            elif isinstance(node, ast.Attribute):
                attr = node.attr
                if not attr.startswith("_") or attr.startswith("__") or attr in NAMEDTUPLE_API:
                    continue
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                if attr not in defined:
                    crossings.append(f"{name}:{node.lineno} uses {ast.unparse(node)}")
    assert crossings == []


def test_no_runtime_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    known = {name for name, _, _ in modules()}
    for name, path, tree in modules():
        targets = set()
        for imported, _ in runtime_imports(name, path, tree):
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            # A package's __init__ re-exports: importing pgactors itself is not a cycle.
            if imported and imported != name and imported != "pgactors":
                targets.add(imported)
        graph[name] = targets
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_only_the_postgres_package_imports_the_driver() -> None:
    importers = sorted(
        f"{name} imports {imported}"
        for name, path, tree in modules()
        if not name.startswith("pgactors.postgres")
        for imported, _ in runtime_imports(name, path, tree)
        if imported.split(".")[0] in DRIVER
    )
    assert importers == []


def test_the_checks_see_the_whole_package() -> None:
    # An empty or partial walk would pass every check above.
    names = {name for name, _, _ in modules()}
    assert {"pgactors", "pgactors.store.store", "pgactors.postgres.connection"} <= names
    assert len(names) >= 30
