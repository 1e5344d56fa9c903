"""No import circle in src/blf: the modules form layers, each importing only those below it.

A circle works only while every import in it happens in one order (a late import inside a
function hides one, it does not remove it), so the graph counts every import of `blf.*` a module
can run: at module level and inside functions, relative ones resolved. It leaves out imports under
`if TYPE_CHECKING:` (they never run) and the parent packages Python imports on the way to a module
(`blf.eval.attacks.pgd` runs `blf/eval/attacks/__init__.py` first, but only to look up the package:
`from blf.eval.attacks.base import Attack` does not make pgd.py depend on the package's names).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "blf"


def modules(root: Path = SRC / PACKAGE) -> dict[str, Path]:
    """Every module of the package by its dotted name; a package by its own name (its __init__)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST):
    """The Import and ImportFrom nodes under `node` that can run: not the body of `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child.test):
            for other in child.orelse:  # `else:` of TYPE_CHECKING runs
                yield from _import_nodes_of(other)
            continue
        yield from _import_nodes_of(child)


def _import_nodes_of(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    yield from _import_nodes(node)


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` (at `path`) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:  # relative: `from ..x import y` in package a.b.c is a.b.x
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from blf.x import y`: the submodule blf.x.y where there is one, else blf.x itself.
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        found |= {t for t in targets if t in known and t != name}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def components(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def shortest_cycle(edges: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """The shortest circle through `start` inside one component (breadth first)."""
    parents, frontier = {start: None}, [start]
    while frontier:
        following = []
        for node in frontier:
            for other in sorted(edges[node] & within):
                if other == start:
                    path = [node]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if other not in parents:
                    parents[other] = node
                    following.append(other)
        frontier = following
    raise AssertionError(f"{start} is on no circle in {sorted(within)}")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One circle per component of mutually importing modules, and every module of it covered:
    a circle through each member not yet on a printed one."""
    found = []
    for component in components(edges):
        covered: set[str] = set()
        for member in component:
            if member not in covered:
                cycle = shortest_cycle(edges, member, set(component))
                covered |= set(cycle)
                found.append(cycle)
    return found


def test_the_graph_sees_the_imports_that_run():
    edges = graph()
    # module level, relative resolved, a submodule named in `from ... import`
    assert "blf.eval.attacks.transfer" in edges["blf.eval.attacks"]
    assert "blf.config" in edges["blf.eval.attacks.base"]
    assert "blf.nn.heads" in edges["blf"]
    # under `if TYPE_CHECKING:` only: never runs
    assert "blf.assembly" not in edges["blf.eval.assessment"]


def test_a_function_level_import_counts_and_type_checking_does_not(tmp_path):
    package = tmp_path / "blf"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import b\n")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from blf import c\n"
                                  "def late():\n    from .sub import b\n")
    (package / "sub" / "b.py").write_text("from ..a import late\n")
    (package / "c.py").write_text("import blf.a\n")
    known = modules(package)
    edges = {name: imports(name, path, known) for name, path in known.items()}
    assert edges == {"blf": set(), "blf.a": {"blf.sub.b"}, "blf.c": {"blf.a"}, "blf.sub": {"blf.sub.b"},
                     "blf.sub.b": {"blf.a"}}
    assert cycles(edges) == [["blf.a", "blf.sub.b", "blf.a"]]


def reached(edges: dict[str, set[str]], start: str) -> set[str]:
    """The modules `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for other in edges[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


def test_the_evaluation_takes_its_models_from_outside():
    """The attacks are handed their models (a transfer attack its source, blf.sources): nothing
    under eval/ reaches the apps, their assembly or their loader."""
    edges = graph()
    apps = {"blf.app", "blf.assembly", "blf.sources", "blf.trained"}
    assert {name: sorted(reached(edges, name) & apps) for name in edges
            if name.startswith("blf.eval") and reached(edges, name) & apps} == {}


def test_the_evaluation_imports_nothing_above_it():
    """The signals of attack failure live in eval/ (eval/signals/): the studies' integrity checks
    and the audit both read them, and nothing under eval/ reaches the audit, the report or the study
    (the audit as an analysis is handed in by the app)."""
    edges = graph()
    above = {name for name in edges if name.startswith(("blf.audit", "blf.report", "blf.study"))}
    assert {name: sorted(reached(edges, name) & above) for name in edges
            if name.startswith("blf.eval") and reached(edges, name) & above} == {}


def test_the_settings_stay_below_the_evaluation():
    assert sorted(m for m in reached(graph(), "blf.settings") if m.startswith("blf.eval")) == []


def test_no_import_circle_in_the_package():
    found = cycles(graph())
    assert not found, "import circles (each module imports the next):\n" + "\n".join(" -> ".join(c) for c in found)
