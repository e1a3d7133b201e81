"""Data flows one way (docs/architecture.md): no module of balora imports from a module above it.

Every `import` statement of every module is read with `ast`, the ones inside functions included. A
module joins the flow by being added to LAYERS; modules on one layer may import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "balora"

# Lowest first: the layout line of docs/architecture.md (whose table lists these layers), `assets →
# vision_pretraining → models, data, instructions, images → bitsandbytes_backend → quantisation, base_transform → importance →
# allocation → initialisation → reallocation → methods → api → training → run → runfiles → store →
# tuning, estimate → specs → sweeps → report`, with `cli` on top. `balora` is the package itself (its
# version), `errors` the one exception a user reads, `config` the run settings everything reads, `measure` the
# phase timer, `method_registry` the record of every method (that config, the dry run and the report read),
# `options` the options classes of the tasks and of the quantised base, and what every options class shares.
LAYERS = [
    {"balora", "errors", "quiet"},
    {"config", "measure", "method_registry", "options"},
    {"assets"},
    {"vision_pretraining"},
    {"models", "data", "instructions", "images"},
    {"tasks"},
    {"bitsandbytes_backend"},
    {"quantisation", "base_transform"},
    {"importance"},
    {"allocation"},
    {"initialisation"},
    {"reallocation"},
    {"methods"},
    {"api"},
    {"training"},
    {"run"},
    {"runfiles"},
    {"store"},
    {"tuning", "estimate"},
    {"specs"},
    {"sweeps"},
    {"report"},
    {"cli", "__main__"},
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def concept(path: Path) -> str:
    """The module a file belongs to: its first name under balora/ (`report/tables.py` is `report`)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "balora" if parts == ("__init__",) else parts[0]


def imported(tree: ast.AST, path: Path) -> set[str]:
    """The balora modules a file imports (by their concept name), wherever the import statement is."""
    found = set()
    package = ("balora", *path.relative_to(PACKAGE).parent.parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (package[: len(package) - node.level + 1] if node.level else ()) + tuple(
                (node.module or "").split(".") if node.module else ())
            names = [[*base, alias.name] for alias in node.names]
        else:
            continue
        for parts in names:
            if parts[0] != "balora":
                continue
            inner = parts[1] if len(parts) > 1 else "balora"
            found.add(inner if (PACKAGE / inner).is_dir() or (PACKAGE / f"{inner}.py").is_file() else "balora")
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_one_above_it(path: Path):
    name = concept(path)
    assert name in LAYER, f"balora/{path.relative_to(PACKAGE)}: add '{name}' to LAYERS in {Path(__file__).name}"
    above = {other for other in imported(ast.parse(path.read_text(), str(path)), path)
             if LAYER.get(other, -1) > LAYER[name]}
    assert not above, f"balora/{path.relative_to(PACKAGE)} ({name}) imports from modules above it: {sorted(above)}"


def test_the_check_sees_imports_inside_functions_and_relative_ones(tmp_path: Path):
    source = "def f():\n    from balora.cli import main\nfrom . import store\nimport balora.report.stats\n"
    path = PACKAGE / "sweeps.py"
    assert imported(ast.parse(source), path) == {"cli", "store", "report"}


def import_cycles() -> list[list[str]]:
    """Cycles among balora's modules (by concept name), imports inside functions included: modules on one layer
    may import each other, but not both ways round, however indirectly."""
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        name = concept(path)
        graph.setdefault(name, set()).update(imported(ast.parse(path.read_text(), str(path)), path) - {name, "balora"})
    cycles, state = [], {}  # state: 1 while on the current path, 2 when done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for other in sorted(graph.get(node, ())):
            if state.get(other) == 1:
                cycles.append(trail[trail.index(other):] + [other])
            elif other not in state:
                visit(other, [*trail, other])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_no_import_cycle():
    assert import_cycles() == []


def quantisation_names(path: Path) -> set[str]:
    """Names in a file's code (imports, variables, attributes; not its docstrings or comments) that speak of a
    quantised base."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.alias):
            names.add(node.asname or node.name)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute | ast.FunctionDef):
            names.add(node.attr if isinstance(node, ast.Attribute) else node.name)
    return {name for name in names if "quant" in name or "qa_lora" in name or "merge" in name}


def test_the_run_knows_a_quantised_base_only_through_its_transform():
    """Issue 37: a quantised base (its setup, its hooks, QA-LoRA's merge into zero-points) is one unit,
    `base_transform`, that the run calls like any other transform: run.py names none of it."""
    assert quantisation_names(PACKAGE / "run.py") == set()
