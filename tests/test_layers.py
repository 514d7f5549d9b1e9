"""The package's layers import only downward, by relative imports, with no circle.

    space, baselines  <  search.engine  <  search.study  <  search.drill  <  search.report  <  search (cli, flags)

Read from the source with `ast` (function-level imports included), so a new module is checked
the day it appears."""

import ast
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"space": "budgetnas.space", "baselines": "budgetnas.baselines", "search": "budgetnas.search"}
LAYERS = ["budgetnas.space", "budgetnas.baselines", "budgetnas.search.engine", "budgetnas.search.study",
          "budgetnas.search.drill", "budgetnas.search.report", "budgetnas.search"]


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            out[".".join([package, *parts]).removesuffix(".__init__")] = path
    return out


def imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported module, written relatively?) for each import of the project's own modules."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
                found += [(target, True)] + [(f"{target}.{a.name}", True) for a in node.names]
            elif node.module and node.module.startswith("budgetnas"):
                found.append((node.module, False))
        elif isinstance(node, ast.Import):
            found += [(a.name, False) for a in node.names if a.name.startswith("budgetnas")]
    return found


def layer(name: str) -> int:
    """The layer of a module: that of the longest package prefix it has."""
    prefix = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len)
    return LAYERS.index(prefix)


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {t for t, _ in imports(name, path) if t in mods and t != name} for name, path in mods.items()}


def test_every_import_of_the_projects_own_modules_is_relative():
    absolute = [(name, t) for name, path in modules().items() for t, rel in imports(name, path) if not rel]
    assert absolute == []


def test_the_layers_import_only_downward():
    upward = [(a, b) for a, targets in graph().items() for b in targets if layer(b) > layer(a)]
    assert upward == []


def test_no_import_circle():
    g, state, circles = graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(g[node]):
            if nxt.endswith("__init__") or g.get(nxt) is None:
                continue
            if state.get(nxt) == "open":
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    # a package's __init__ re-exporting its modules is not a circle: drop edges into a package itself
    circles = [c for c in circles if not any(b.startswith(a + ".") or a.startswith(b + ".") for a, b in itertools.pairwise(c))]
    assert circles == []


def test_the_checks_see_an_upward_import_and_a_circle(tmp_path):
    """The checks above can fail: a module of the engine importing the drill is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ..drill.run import Drill\n")
    found = imports("budgetnas.search.engine.bad", bad)
    assert ("budgetnas.search.drill.run", True) in found
    assert layer("budgetnas.search.drill.run") > layer("budgetnas.search.engine.bad")
    assert layer("budgetnas.search.cli") > layer("budgetnas.search.report.status") > layer("budgetnas.space.arch")
