"""The package's floors, checked on every module: each imports only from its own floor or those below it,
there is no import cycle, and no import hides inside a function to dodge either rule.

    ground      nas.errors, nas.instantiate, nas.io, nas.supernet   exceptions, safe files, the elastic model
    data        nas.models, nas.data                                loading models, datasets and text
    core        nas.training, nas.evaluation                        fine-tuning; scoring on tasks and text
    search      nas.search                                          objectives, samplers, studies, fronts
    libraries   nas.analysis, nas.quantization, nas.export,         reports, INT8/NF4, standalone exports,
                nas.baselines                                       pruning baselines
    stages      nas.stages                                          each job of the pipeline, the pipeline
    entry       nas.cli, nas.<job> (python -m), __main__, nas       command lines and the public API
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nas"
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", ("nas.errors", "nas.instantiate", "nas.io", "nas.supernet")),
    ("data", ("nas.models", "nas.data")),
    ("core", ("nas.training", "nas.evaluation")),
    ("search", ("nas.search",)),
    ("libraries", ("nas.analysis", "nas.quantization", "nas.export", "nas.baselines")),
    ("stages", ("nas.stages",)),
    (
        "entry",
        (
            "nas.cli",
            "nas.pipeline",
            "nas.train",
            "nas.evaluate",
            "nas.reorder",
            "nas.analyze",
            "nas.overview",
            "nas.pick",
        ),
    ),
]
ENTRY = len(FLOORS) - 1


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> int:
    if module == "nas" or module.endswith(".__main__"):
        return ENTRY  # the public API facade and the `python -m` entries
    best = max(  # the longest prefix that names the module or a package holding it
        (
            (len(prefix), i)
            for i, (_, prefixes) in enumerate(FLOORS)
            for prefix in prefixes
            if module == prefix or module.startswith(prefix + ".")
        ),
        default=None,
    )
    if best is None:
        raise AssertionError(f"{module} belongs to no floor: add it to FLOORS in {__file__} (and the README).")
    return best[1]


MODULES = {
    module_name(p): p
    for p in sorted(PACKAGE.rglob("*.py"))
    if "remote_code" not in p.parts  # standalone files
}


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(imported nas module, whether the import sits inside a function or class body)."""
    tree = ast.parse(path.read_text())
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            nested.update(id(child) for child in ast.walk(node) if child is not node)
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "nas":
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names
            ]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "nas"]
        found += [(name, id(node) in nested) for name in names]
    return found


def test_every_module_has_a_floor():
    for module in MODULES:
        floor_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_and_no_hidden_imports(module):
    mine = floor_of(module)
    for target, inside in imports_of(MODULES[module]):
        if module == "nas" and target.startswith("nas."):
            continue  # the facade re-exports from every floor
        theirs = floor_of(target)
        assert theirs <= mine, f"{module} ({FLOORS[mine][0]}) imports {target} ({FLOORS[theirs][0]}), a higher floor"
        assert not inside or mine == ENTRY, f"{module} imports {target} inside a function: import it at the top"


def test_no_import_cycles():
    graph = {m: {t for t, _ in imports_of(p) if t in MODULES and t != m} for m, p in MODULES.items() if m != "nas"}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if target == "nas" or target.startswith(module + "."):
                continue  # a package's __init__ re-exporting its own modules
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target] if target in path else [module, target]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if state.get(target) is None:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
