"""The shape of the package: no import cycles, and no module grown past one job's size."""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

PACKAGE = Path(__file__).resolve().parent.parent / "ddiscover"

#: A module longer than this has usually taken on a second job: split it.
MAX_LINES = 420

#: Modules known to be too long, each being split; the test fails once one is short again,
#: so that it is taken off this list.
BEING_SPLIT: frozenset[str] = frozenset()


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    """The ``ddiscover`` modules a module imports at import time (``TYPE_CHECKING`` too).

    Imports inside functions are left out: they run later, which is why they are there.
    """
    found: set[str] = set()
    statements: list[ast.stmt] = list(tree.body)
    while statements:
        node = statements.pop()
        if isinstance(node, ast.If | ast.Try):
            statements.extend(node.body)
            statements.extend(node.orelse)
            if isinstance(node, ast.Try):
                for handler in node.handlers:
                    statements.extend(handler.body)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ddiscover"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module.startswith("ddiscover"):
                found.add(module)
                found.update(f"{module}.{a.name}" for a in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """Each ``ddiscover`` module and the ``ddiscover`` modules it imports at import time."""
    sources = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = _top_level_imports(tree, name, path.name == "__init__.py")
        graph[name] = {m for m in imported if m in sources and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or ``None``."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, pending = stack[-1]
            if not pending:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            child = pending.pop()
            if child in on_path:
                return [*path[path.index(child) :], child]
            if child not in done:
                stack.append((child, sorted(graph[child])))
                path.append(child)
                on_path.add(child)
    return None


class StructureTests(SynchronousTestCase):
    """The package's import graph and module sizes."""

    def test_no_import_cycle(self) -> None:
        """No ddiscover module imports, directly or not, a module that imports it back."""
        self.assertIsNone(find_cycle(import_graph()))

    def test_cycle_finder_finds_one(self) -> None:
        """The cycle finder reports a cycle when there is one (so the test above can fail)."""
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
        self.assertEqual(find_cycle(graph), ["a", "b", "c", "a"])

    def test_modules_stay_small(self) -> None:
        """Every module is at most MAX_LINES long: past that it is doing a second job."""
        long = {
            str(path.relative_to(PACKAGE.parent)): count
            for path in PACKAGE.rglob("*.py")
            if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
        }
        self.assertEqual(set(long), BEING_SPLIT)
