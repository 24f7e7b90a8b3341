"""The import structure: every module imports alone, no cycles, layers that point one way.

The graph is read from the source (`ast`), so it sees imports inside functions too. Cycles
are checked among module-level imports (the ones that run on import); layers are checked
on every import, lazy ones included: a lower layer that imports a higher one lazily still
depends on it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "distill"

# Lower layers never import higher ones. A module's layer is that of its longest
# listed prefix; everything unlisted is a component (layer 2).
LAYERS: dict[str, int] = {
    # 0: foundations, which know nothing of models or components
    "distill.settings": 0, "distill.registry": 0, "distill.records": 0,
    "distill.identity": 0, "distill.prompts": 0, "distill.store": 0,
    "distill.data": 0, "distill.tinymodel": 0, "distill.runlock": 0,
    "distill.budget": 0,  # caps and prices: settings only (a served model has a price)
    # 1: model references, backends' engine options and the component contract
    "distill.models": 1, "distill.engine_options": 1, "distill.component": 1,
    # 2: components (backends, generators, filters, training, evaluation, metrics, ...)
    # 3: the recipe, assembled from the components' settings; the report
    "distill.recipe": 3, "distill.report": 3, "distill.cards": 3, "distill.export": 3,
    "distill.tracking": 3, "distill.report_plots": 3,
    # 4: the orchestrator; the plan, which reads recipes and runs
    "distill.runner": 4, "distill.plan": 4,
    # 5: entry points that drive runs
    "distill.cli": 5, "distill.flywheel.sweep": 5, "distill.review_cli": 5,
    "distill.microworld.cli": 5, "distill.evaluate.decontaminate_cli": 5, "distill.__main__": 5,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    best = max((prefix for prefix in LAYERS
                if module == prefix or module.startswith(prefix + ".")), key=len, default=None)
    return LAYERS[best] if best is not None else 2


def imports(module: str, top_level_only: bool) -> set[str]:
    """The distill modules `module` imports (resolved to modules that exist)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also `if TYPE_CHECKING:` blocks are not run
        nodes = [n for n in nodes if not isinstance(n, ast.If)]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_alone(module):
    """Each module imports in a fresh interpreter, so no import order hides a cycle."""
    result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_no_import_cycles_among_module_level_imports():
    graph = {module: imports(module, top_level_only=True) for module in MODULES}
    cycles = [component for component in strongly_connected(graph) if len(component) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_layers_point_one_way():
    upward = [f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
              for module in MODULES for target in imports(module, top_level_only=False)
              if layer(target) > layer(module)]
    assert not upward, "\n".join(upward)


def test_importing_distill_imports_no_heavy_library():
    """`import distill` and filling every registry import none of vLLM, torch, lm-eval."""
    code = ("import sys, distill.recipe\n"
            "distill.recipe.recipe_model()\n"
            "from distill.registry import BACKENDS, TRAINERS\n"
            "BACKENDS.names(); TRAINERS.names()\n"
            "heavy = [m for m in ('vllm', 'torch', 'lm_eval', 'transformers', 'trl') "
            "if m in sys.modules]\n"
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "", f"imported at registry fill: {result.stdout.strip()}"


def test_the_checker_sees_a_cycle_and_an_upward_import():
    """The two graph checks above can fail: a cycle and an upward edge are found."""
    assert [sorted(c) for c in strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}})
            if len(c) > 1] == [["a", "b"]]
    assert layer("distill.runner") > layer("distill.filters.novelty") > layer("distill.models")


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            found.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return found
