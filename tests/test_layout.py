"""The package's shape, read from its source: which folder may import which, no import circle, no long file.

The imports are read with ast, those inside functions and the relative ones included, so that a lazy import
made to answer `pfcbench --help` fast still counts as an arrow.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

RANK_SIDE_MAY_IMPORT = ("bench.config", "bench.units", "bench.impls", "bench.numbers", "bench.memory")
"""What the rank and workload folders may import of bench besides themselves: the cell's description and the
models' torch-free halves. What else a rank needs comes on its command line or in its cell file."""

MAX_LINES = 420
MAX_CUDA_TESTS = 8


def module_name(path: Path) -> str:
    parts = path.relative_to(BENCH.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module name a source imports, anywhere in it; `from a import b` counts a and a.b (b may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def imported(path: Path) -> set[str]:
    """The bench modules a file of the package imports."""
    names = imports_of(path.read_text(), module_name(path), is_package=path.name == "__init__.py")
    return {name for name in names if name in MODULES}


MODULES = {module_name(path): path for path in BENCH.rglob("*.py")}
GRAPH = {name: imported(path) - {name} for name, path in MODULES.items()}


def in_folder(name: str, *folders: str) -> bool:
    return any(name == folder or name.startswith(folder + ".") for folder in folders)


def test_the_walk_sees_relative_and_lazy_imports():
    source = "from . import worker\nfrom ..store import results\n\ndef f():\n    import bench.cli\n"
    names = imports_of(source, "bench.rank.probe")
    assert {"bench.rank.worker", "bench.store.results", "bench.cli"} <= names
    assert "bench.rank.worker" in imports_of("from . import worker\n", "bench.rank", is_package=True)


@pytest.mark.parametrize("folder", ["bench.rank", "bench.workload"])
def test_the_rank_side_imports_only_itself_and_the_cells_description(folder):
    wrong = {
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if in_folder(name, folder)
        for target in targets
        if not in_folder(target, "bench.rank", "bench.workload", *RANK_SIDE_MAY_IMPORT) and target != "bench"
    }
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize(
    "folder", ["bench.report", "bench.publish", "bench.rank", "bench.workload", "bench.plan", "bench.store"]
)
def test_nothing_below_the_commands_imports_them(folder):
    upward = {
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if in_folder(name, folder)
        for target in targets
        if in_folder(target, "bench.commands", "bench.cli")
    }
    assert not upward, sorted(upward)


def test_no_import_circle():
    """Between modules: a package's __init__ that only names its modules lazily is no arrow."""
    graph = {name: {t for t in targets if not MODULES[t].name == "__init__.py"} for name, targets in GRAPH.items()}
    state: dict[str, str] = {}
    circles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, circles


def test_every_file_is_short():
    long = {
        str(path.relative_to(BENCH.parent)): n
        for path in MODULES.values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_few_branches_on_cuda():
    tests = [
        f"{path.relative_to(BENCH.parent)}:{number}"
        for path in MODULES.values()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r'[!=]= *"cuda"', line)
    ]
    assert len(tests) <= MAX_CUDA_TESTS, tests


PUBLIC_API = {
    "bench.matrix": ("load_matrix", "Column"),
    "bench.records": ("build_record",),
    "bench.results": ("append_record", "latest_by_cell", "read_records", "write_atomic"),
    "bench.report": ("render_markdown",),
    "bench.workload": ("build_classifier", "PartialFC", "CombinedMarginLoss"),
    "bench.workload.backbones": ("build_backbone",),
}
"""What scripts outside the package import (the README lists it): it stays where it is, whatever moves inside."""


@pytest.mark.parametrize("module", sorted(PUBLIC_API))
def test_the_public_api_stays_importable(module):
    imported_module = importlib.import_module(module)
    assert all(callable(getattr(imported_module, name)) for name in PUBLIC_API[module])


def test_a_packaged_matrix_reads_through_the_public_api(tmp_path):
    from bench.matrix import load_matrix
    from bench.records import build_record
    from bench.results import append_record, latest_by_cell, read_records

    matrix = load_matrix(BENCH / "matrices" / "smoke.toml")
    cell = matrix.cells()[0]
    assert cell.world_size == 2 and cell.to_dict()["classes"] == cell.classes
    append_record(
        tmp_path / "results.jsonl", build_record(cell, [], "error", error="not run", started=0.0, duration_s=0.0)
    )
    assert list(latest_by_cell(read_records(tmp_path / "results.jsonl"))) == [cell.cell_id]
