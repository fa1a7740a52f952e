"""The package reads like the model (DESIGN.md §9): data flows one way, workload → timing
→ theory / simulator → planning → report → CLI. No module imports a layer above its own
or a sibling in the same layer, and no set of modules imports itself round a cycle (lazy
imports inside functions count: they are dependencies too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# The layer of each top-level part of the package; a part may import only lower layers
# (and itself). Parts in one layer are siblings and stay apart.
LAYERS: dict[str, int] = {
    "afdplan": 0,  # the package root: __version__ only
    "errors": 0,
    "choices": 0,
    "normal": 1,
    "tabular": 1,
    "presets": 1,
    "data": 2,
    "workload": 2,
    "timing": 2,
    "bundle": 2,
    "calibrate": 3,
    "theory": 3,
    "sim": 3,
    "plan": 4,
    "deploy": 4,
    "capacity": 4,
    "study": 5,
    "report": 5,
    "cli": 6,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted((SRC / "afdplan").rglob("*.py")):
        name = _module_name(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] == "afdplan":
                    found.add(node.module)
                    # ``from afdplan.x import y`` may name a submodule y
                    found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "afdplan")
        graph[name] = found
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


GRAPH = _imports()


def test_every_part_has_a_layer():
    assert {_part(m) for m in GRAPH} == set(LAYERS)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_upward_or_sideways_import(module):
    mine = _part(module)
    for dep in GRAPH[module]:
        theirs = _part(dep)
        if theirs != mine:
            assert LAYERS[theirs] < LAYERS[mine], f"{module} imports {dep}"


def test_no_import_cycles():
    # Tarjan-free check: depth-first search with colours; a grey node reached again is a
    # cycle. Package __init__ files re-export their submodules, so an edge from a module to
    # its own package's __init__ is not followed (it is how Python resolves the name).
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(GRAPH[node]):
            if node.startswith(dep + "."):
                continue
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles}"


def test_long_functions_say_why():
    # In the model's core packages a function over 60 lines states its reason ("Long ...")
    # in its docstring: compiled loops and the plain oracles that mirror them.
    long = []
    for part in ("sim", "theory", "bundle", "deploy"):
        for path in sorted((SRC / "afdplan" / part).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno >= 60:
                    doc = ast.get_docstring(node) or ""
                    if "Long" not in doc:
                        long.append(f"{path.name}:{node.name}")
    assert not long, f"functions over 60 lines without a reason: {long}"
