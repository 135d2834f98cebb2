"""The house rules the import contracts cannot say: no two subpackages of ``app`` import each
other (at any depth, lazily or not), and no module is longer than one sitting's read."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500


def _unit(module: str) -> str:
    """``app.store.calls`` -> ``app.store``; ``app.main`` -> ``app.main``."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _runtime_nodes(tree: ast.AST):
    """Every node but the bodies of ``if TYPE_CHECKING:`` (annotations only: nothing runs)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in ast.walk(child))
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path, package: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
    return found


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in (ROOT / "app").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for target in _imports(path, package):
            if target.startswith("app.") and _unit(target) != _unit(module):
                graph[_unit(module)].add(_unit(target))
    return graph


def test_no_two_subpackages_import_each_other():
    graph = unit_graph()
    mutual = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets
                     if a in graph.get(b, set())})
    assert mutual == []


def test_no_module_is_over_500_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for base in ("app", "telephony", "twiml")
        for p in (ROOT / base).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
