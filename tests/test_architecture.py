"""The house as docs/architecture.md draws it: every module's imports inside payi_otel are among
those its row of the module table allows, the graph has no cycle, and the model wing imports
nothing from OpenTelemetry or from outside itself.

Imports are read from the source (lazy ones inside functions too; ``TYPE_CHECKING`` ones
excepted: they never run).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "payi_otel"
DOC = ROOT / "docs" / "architecture.md"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    base = PACKAGE.parent / dotted.replace(".", "/")
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for other in node.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path) -> Set[str]:
    found: Set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("payi_otel"):
                continue
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                found.add(dotted if _is_module(dotted) else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("payi_otel"))
    return found


def _third_party(path: Path) -> Set[str]:
    found: Set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
    return found


GRAPH: Dict[str, Set[str]] = {
    _module_name(p): _imports(p) - {_module_name(p)} for p in sorted(PACKAGE.rglob("*.py"))
}


def _short(module: str) -> str:
    return module[len("payi_otel.") :] if module.startswith("payi_otel.") else "__init__"


def _rows() -> List[tuple[List[str], List[str]]]:
    """(modules, may import) per row of the module table: code spans in the first and last
    cells; a name ending in ``/`` is a whole package (the wing, the providers)."""
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        rows.append((re.findall(r"`([^`]+)`", cells[0]), re.findall(r"`([^`]+)`", cells[-1])))
    return rows


def _covers(pattern: str, module: str) -> bool:
    short = _short(module)
    if pattern.endswith("/"):
        return short == pattern[:-1] or short.startswith(pattern[:-1] + ".")
    return short == pattern.replace("/", ".")


def _row_of(module: str) -> List[str]:
    matches = [allowed for names, allowed in _rows() if any(_covers(n, module) for n in names)]
    assert matches, f"{_short(module)} has no row in docs/architecture.md's module table"
    return matches[0]


@pytest.mark.parametrize("module", sorted(GRAPH), ids=_short)
def test_every_module_imports_only_what_its_row_allows(module: str) -> None:
    allowed = _row_of(module)
    upward = sorted(_short(m) for m in GRAPH[module] if not any(_covers(a, m) for a in allowed))
    assert not upward, f"{_short(module)} imports {upward}, which its row does not allow"


def test_the_import_graph_has_no_cycle() -> None:
    state: Dict[str, int] = {}

    def visit(module: str, path: List[str]) -> None:
        state[module] = 1
        for dep in sorted(GRAPH.get(module, ())):
            if dep == "payi_otel" or dep not in GRAPH:
                continue
            assert state.get(dep) != 1, f"import cycle: {' -> '.join(map(_short, [*path, dep]))}"
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_the_model_wing_is_the_ground_floor() -> None:
    for path in sorted((PACKAGE / "_model").rglob("*.py")):
        module = _module_name(path)
        outside = sorted(m for m in GRAPH[module] if not m.startswith("payi_otel._model"))
        assert not outside, f"{_short(module)} imports {outside} from outside the model wing"
        assert "opentelemetry" not in _third_party(path), f"{_short(module)} imports OpenTelemetry"


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_source_path_the_docs_name_exists(doc: Path) -> None:
    named = set(re.findall(r"src/payi_otel/[\w/]+\.py", doc.read_text()))
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"{doc.name} names {missing}"
