"""The package's layering: no module outside `commands/` (and `cli.py`) imports the command layer, and no
two modules import each other at module level (a cycle that works only by import order)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "cerebras_gpt"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}


def _imports(path: Path, module_level_only: bool) -> set[str]:
    """The cerebras_gpt modules ``path`` imports (with ``module_level_only``: at import time, not inside
    functions or `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(), str(path))
    this = _module_name(path)
    is_package = path.name == "__init__.py"
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = this.split(".")[: len(this.split(".")) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names = [source] + [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "cerebras_gpt":
                continue
            while name and name not in MODULES:  # `from pkg import function`: the module is pkg
                name = name.rpartition(".")[0]
            if name and name != this:
                found.add(name)
    return found


def test_only_the_command_layer_imports_commands():
    offenders = {}
    for name, path in MODULES.items():
        if name.startswith("cerebras_gpt.commands") or name in ("cerebras_gpt.cli", "cerebras_gpt.__main__"):
            continue
        bad = sorted(m for m in _imports(path, module_level_only=False) if m.startswith("cerebras_gpt.commands"))
        if bad:
            offenders[name] = bad
    assert not offenders, f"library modules import the command layer (move the helper below it): {offenders}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycle_at_module_level():
    graph = {
        name: {
            m
            for m in _imports(path, module_level_only=True)
            # a package's own __init__ importing its submodules is how packages work, not a cycle
            if not (path.name == "__init__.py" and m.startswith(name + "."))
        }
        for name, path in MODULES.items()
    }
    assert not _cycles(graph), f"module-level import cycles: {_cycles(graph)}"


@pytest.mark.parametrize(
    "graph, expected", [({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]), ({"a": {"b"}, "b": set()}, [])]
)
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert _cycles(graph) == expected


def test_the_plan_does_not_import_the_loop_even_lazily():
    """recipe.py (plan, dry-run probe) sits under loop.py: the probe takes autocast from the runtime layer."""
    for lower in ("cerebras_gpt.train.recipe", "cerebras_gpt.train.micro_batch", "cerebras_gpt.train.loss"):
        assert "cerebras_gpt.train.loop" not in _imports(MODULES[lower], module_level_only=False), lower
    autocasts = [name for name, path in MODULES.items() if "torch.autocast(" in path.read_text()]
    assert autocasts == ["cerebras_gpt.runtime"], autocasts  # one autocast helper
