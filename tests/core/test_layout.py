"""The house: sub-packages import only from layers below them, never in a cycle, never Prefect."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "koa_core"
# Bottom to top: a module may import from its own unit or from any lower layer.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(names.split())
    for names in (
        "config errors schema",
        "storage imaging",
        "io",
        "sources phantom data model privacy localize",
        "training registry",
        "evaluation pipeline",
        "workflows",
        "cli",
    )
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path: Path) -> Iterator[tuple[str, bool]]:
    """Imported module names, each with whether it is imported at module level."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, id(node) in top_level) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, id(node) in top_level


def _unit(module: str) -> str:
    """The layer unit of a koa_core module: its sub-package, or the top-level module."""
    return module.split(".")[1] if module.count(".") else "__init__"


def test_every_unit_has_a_layer() -> None:
    units = {_unit(name) for name, _ in _modules()} - {"__init__", "__main__"}
    assert units <= set(RANK), f"add {sorted(units - set(RANK))} to LAYERS"


@pytest.mark.parametrize(("module", "path"), list(_modules()), ids=lambda v: str(v))
def test_imports_point_down(module: str, path: Path) -> None:
    unit = _unit(module)
    if unit in ("__init__", "__main__"):
        return
    for imported, _ in _imports(path):
        if not imported.startswith("koa_core.") or _unit(imported) == unit:
            continue
        target = _unit(imported)
        assert RANK[target] < RANK[unit], f"{module} imports {imported}: {target} is not below"


def test_no_import_cycle_between_modules() -> None:
    graph = {
        module: {name for name, _ in _imports(path) if name.startswith("koa_core")}
        for module, path in _modules()
    }
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if target not in graph:
                continue
            assert state.get(target) != "open", "cycle: " + " -> ".join([*trail, target])
            if target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_prefect_and_flows_only_in_the_cli_and_only_lazily() -> None:
    for module, path in _modules():
        for imported, top_level in _imports(path):
            outer = imported.split(".")[0]
            if outer not in ("prefect", "prefect_dask", "flows", "deployments"):
                continue
            assert _unit(module) == "cli", f"{module} imports {imported}"
            assert not top_level, f"{module} imports {imported} at module level"
