"""Tests for bench.matrix: malformed matrices are refused in one line, and grids expand as written."""

from __future__ import annotations

import dataclasses
import itertools
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.config import FIELD_TYPES
from bench.matrix import (
    COLUMN_KEYS,
    FORMATS,
    METRICS,
    REPORT_KEYS,
    ROW_EXTRA_KEYS,
    RUN_KEYS,
    SECTION_KEYS,
    TOP_KEYS,
    Matrix,
    MatrixError,
    load_matrix,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "bench" / "matrices"
EXAMPLE = SHIPPED / "example.toml"
RTX3080 = SHIPPED / "rtx3080.toml"
SMOKE = SHIPPED / "smoke.toml"
IMPLS = SHIPPED / "impls.toml"
MALFORMED = Path(__file__).resolve().parent / "matrices"
CORPUS = sorted(MALFORMED.glob("*.toml"))


def expectations(path: Path) -> list[str]:
    """The `# expect: TEXT` lines of a corpus file: texts its error message must contain."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    return [line.removeprefix("# expect:").strip() for line in text.splitlines() if line.startswith("# expect:")]


def refusal(output: str, path: Path) -> str:
    """The one error line of a refused matrix, less its 'Error: PATH: ' prefix; fails on anything else."""
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    prefix = f"Error: {path}: "
    assert lines[0].startswith(prefix), output
    return lines[0].removeprefix(prefix)


def test_corpus_is_large_and_every_file_says_what_to_expect():
    assert len(CORPUS) >= 24
    assert all(expectations(path) for path in CORPUS), [p.name for p in CORPUS if not expectations(p)]


@pytest.mark.parametrize("command", ["plan", "run"])
@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_malformed_matrix_is_refused_in_one_line(path: Path, command: str, tmp_path: Path):
    results = tmp_path / "results"
    # --timeout only bounds the damage if a bad file ever slips through and cells start.
    extra = ["--timeout", "10"] if command == "run" else []
    result = CliRunner().invoke(main, [command, str(path), "--results", str(results), *extra])
    assert result.exit_code == 2, result.output
    message = refusal(result.output, path)
    for expected in expectations(path):
        assert expected in message
    assert not results.exists() or not any(results.iterdir())


def test_malformed_matrix_is_refused_by_the_real_command(tmp_path: Path):
    path = MALFORMED / "batch_not_divisible.toml"
    results = tmp_path / "results"
    argv = [sys.executable, "-m", "bench.cli", "run", str(path), "--results", str(results)]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "batch_size 9 does not split over 2 ranks" in refusal(proc.stderr, path)
    assert not results.exists()


def test_missing_matrix_file_is_refused(tmp_path: Path):
    path = tmp_path / "nowhere.toml"
    result = CliRunner().invoke(main, ["run", str(path), "--results", str(tmp_path / "results")])
    assert result.exit_code == 2
    assert refusal(result.output, path) == "no such matrix file"


def test_impossible_override_is_blamed_on_the_option(tmp_path: Path):
    result = CliRunner().invoke(main, ["plan", str(SMOKE), "--nproc", "0", "--results", str(tmp_path)])
    assert result.exit_code == 2
    assert "nproc_per_node comes from a command-line option" in refusal(result.output, SMOKE)


@pytest.mark.parametrize("path", [EXAMPLE, RTX3080, SMOKE, IMPLS], ids=lambda p: p.stem)
def test_shipped_matrices_plan_cleanly_and_write_nothing(path: Path, tmp_path: Path):
    results = tmp_path / "results"
    result = CliRunner().invoke(main, ["plan", str(path), "--results", str(results)])
    assert result.exit_code == 0, result.output
    count = len(load_matrix(path).cells())
    assert f"{count} of {count} cells to run" in result.output
    assert not results.exists()


HEAD = """
[defaults]
backbone = "none"
device = "cpu"
nproc_per_node = 2
classes = 100
"""


def section(title: str, body: str) -> str:
    return f'[[sections]]\ntitle = "{title}"\ncolumns = [{{ header = "Batch-size", field = "batch_size" }}]\n{body}\n'


def load(tmp_path: Path, *sections: str, head: str = HEAD, overrides: dict | None = None) -> Matrix:
    path = tmp_path / "m.toml"
    path.write_text(head + "\n".join(sections))
    return load_matrix(path, overrides)


@pytest.mark.parametrize(
    ("grid", "first"),
    [
        (
            'batch_size = [16, 8]\nprecision = ["fp32", "bf16"]\nsample_rate = [1.0, 0.1]',
            [(16, "fp32", 1.0), (16, "fp32", 0.1), (16, "bf16", 1.0)],
        ),
        (
            'sample_rate = [0.1, 1.0]\nbatch_size = [8, 16]\nprecision = ["bf16", "fp32"]',
            [(0.1, 8, "bf16"), (0.1, 8, "fp32"), (0.1, 16, "bf16")],
        ),
    ],
)
def test_grid_is_the_cartesian_product_in_the_order_written(tmp_path: Path, grid: str, first: list[tuple]):
    matrix = load(tmp_path, section("grid", f"[sections.grid]\n{grid}"))
    axes = tomllib.loads(grid)
    points = [tuple(getattr(row.cell, axis) for axis in axes) for row in matrix.sections[0].rows]
    assert points[:3] == first
    assert points == list(itertools.product(*axes.values()))


def test_exclude_drops_exactly_the_matching_points(tmp_path: Path):
    body = """
[sections.grid]
batch_size = [8, 16]
precision = ["fp32", "bf16"]
sample_rate = [1.0, 0.1]

[[sections.exclude]]
batch_size = 16
sample_rate = 1

[[sections.exclude]]
precision = "bf16"
batch_size = 8
sample_rate = 0.1
"""
    matrix = load(tmp_path, section("exclude", body))
    points = itertools.product([8, 16], ["fp32", "bf16"], [1.0, 0.1])
    expected = [p for p in points if not (p[0] == 16 and p[2] == 1.0) and p != (8, "bf16", 0.1)]
    assert len(expected) == 5
    assert [(c.batch_size, c.precision, c.sample_rate) for c in matrix.cells()] == expected


def test_row_over_grid_over_set_over_defaults_and_overrides_over_all(tmp_path: Path):
    head = HEAD + "seed = 1\nwarmup_steps = 1\nnum_windows = 1\nsteps_per_window = 1\n"
    body = """set = { seed = 2, warmup_steps = 2, num_windows = 2, max_memory_gib = 1.0 }

[sections.grid]
seed = [3]
warmup_steps = [3]

[[sections.rows]]
seed = 4
nproc_per_node = 4
"""
    fields = ("seed", "warmup_steps", "num_windows", "steps_per_window", "embedding_size", "nproc_per_node")
    matrix = load(tmp_path, section("layers", body), head=head)
    grid, row = (tuple(getattr(r.cell, f) for f in fields) for r in matrix.sections[0].rows)
    assert grid == (3, 3, 2, 1, 512, 2)
    assert row == (4, 2, 2, 1, 512, 4)
    assert {r.cell.max_memory_gib for r in matrix.sections[0].rows} == {1.0}

    overrides = {"nproc_per_node": 1, "max_memory_gib": 3.0}
    overridden = load(tmp_path, section("layers", body), head=head, overrides=overrides)
    assert {(r.cell.nproc_per_node, r.cell.max_memory_gib) for r in overridden.sections[0].rows} == {(1, 3.0)}


def test_command_line_overrides_win_over_the_matrix(tmp_path: Path):
    argv = ["plan", str(RTX3080), "--nproc", "1", "--max-memory-gib", "10", "--results", str(tmp_path)]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    overridden = load_matrix(RTX3080, {"nproc_per_node": 1, "max_memory_gib": 10.0}).cells()
    assert all(cell.cell_id in result.output for cell in overridden)
    assert not any(cell.cell_id in result.output for cell in load_matrix(RTX3080).cells())


def test_a_cell_in_two_sections_runs_once_and_shows_in_both(tmp_path: Path):
    first = section("first", "[sections.grid]\nbatch_size = [8, 16]")
    second = section("second", "[[sections.rows]]\nbatch_size = 32\n\n[[sections.rows]]\nbatch_size = 16")
    matrix = load(tmp_path, first, second)
    assert [c.batch_size for c in matrix.cells()] == [8, 16, 32]
    assert matrix.sections[0].rows[1].cell == matrix.sections[1].rows[1].cell
    assert [len(s.rows) for s in matrix.sections] == [2, 2]


OTHER_VALUES = {
    "backbone": "mbf",
    "classes": 200,
    "batch_size": 16,
    "nnodes": 2,
    "nproc_per_node": 4,
    "device": "cuda",
    "precision": "bf16",
    "tf32": True,
    "channels_last": True,
    "sample_rate": 0.5,
    "embedding_size": 256,
    "margin": "cosface",
    "impl": "arcface_torch_2021",
    "label_mode": "constant",
    "warmup_steps": 3,
    "num_windows": 7,
    "steps_per_window": 3,
    "max_memory_gib": 1.5,
    "seed": 5,
    "emulated": True,
    "data": "records",
    "data_path": "faces",
    "num_workers": 0,
}
"""A second valid value for every cell field (of a cell of 2 ranks)."""


def test_cell_ids_are_stable_and_tell_every_field_apart(tmp_path: Path):
    assert set(OTHER_VALUES) == set(FIELD_TYPES)
    ids = [c.cell_id for c in load_matrix(RTX3080).cells()]
    assert ids == [c.cell_id for c in load_matrix(RTX3080).cells()]
    assert len(set(ids)) == len(ids)
    as_int = load(
        tmp_path, section("int", "set = { sample_rate = 1, nproc_per_node = 2 }\n[[sections.rows]]\nbatch_size = 8")
    )
    as_float = load(
        tmp_path, section("float", "set = { sample_rate = 1.0, nproc_per_node = 2 }\n[[sections.rows]]\nbatch_size = 8")
    )
    (cell,) = as_int.cells()
    assert cell.cell_id == as_float.cells()[0].cell_id
    for name, value in OTHER_VALUES.items():
        assert dataclasses.replace(cell, **{name: value}).cell_id != cell.cell_id, name


def test_rtx3080_expands_to_the_published_tables_in_order():
    matrix = load_matrix(RTX3080)
    # (batch, fp16, partial fc, published samples/sec) row by row, as the published report prints them.
    published = [
        [
            (512, False, False, "Fail"),
            (512, False, True, 2190),
            (512, True, False, "Fail"),
            (512, True, True, 2620),
            (1024, False, False, "Fail"),
            (1024, False, True, "Fail"),
            (1024, True, False, "Fail"),
            (1024, True, True, 3800),
        ],
        [
            (512, False, False, 2023),
            (512, True, False, 2392),
            (1024, False, False, "Fail"),
            (1024, True, False, "Fail"),
            (1024, True, True, 4010),
        ],
    ]
    rows = [[(r.cell.batch_size, r.cell.fp16, r.cell.partial_fc, r.published) for r in s.rows] for s in matrix.sections]
    assert rows == published
    cells = matrix.cells()
    assert len(cells) == 13
    assert [c.classes for c in cells] == [2059906] * 8 + [617970] * 5
    assert {(c.backbone, c.world_size, c.tf32, c.embedding_size) for c in cells} == {("r50", 8, True, 512)}
    # the program and data that made the published numbers: 2021's train.py on SyntheticDataset
    assert {(c.impl, c.label_mode) for c in cells} == {("arcface_torch_2021", "constant")}


@pytest.mark.parametrize("impl", ["arcface_torch_2021", "arcface_torch"])
def test_plan_shows_the_impl_of_every_cell(tmp_path: Path, impl: str):
    argv = ["plan", str(RTX3080), "--results", str(tmp_path)]
    result = CliRunner().invoke(main, argv if impl == "arcface_torch_2021" else [*argv, "--set", f"impl={impl}"])
    assert result.exit_code == 0, result.output
    header, _, *rows = result.output.splitlines()[:-1]
    column = [c.strip() for c in header.split("|")].index("impl")
    assert [[c.strip() for c in row.split("|")][column] for row in rows] == [impl] * 13


def test_smoke_expands_to_cpu_cells_including_a_memory_capped_one():
    matrix = load_matrix(SMOKE)
    cells = matrix.cells()
    assert len(cells) >= 8
    assert {(c.device, c.world_size) for c in cells} == {("cpu", 2)}
    assert any(c.max_memory_gib is not None for c in cells)
    assert matrix.sections[1].rows[0].cell in [r.cell for r in matrix.sections[0].rows]


def test_example_expands_as_its_comments_say():
    text = EXAMPLE.read_text()
    matrix = load_matrix(EXAMPLE)
    claimed = re.search(r"It expands to (\d+) cells", text)
    assert claimed and int(claimed.group(1)) == len(matrix.cells())
    per_table = re.findall(r"(\d+) in table (\d+)", text)
    assert per_table and all(len(matrix.sections[int(t) - 1].rows) == int(n) for n, t in per_table)


def test_example_documents_and_uses_every_key():
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    sections = data["sections"]
    assert set(data) == TOP_KEYS
    assert set(data["report"]) == REPORT_KEYS
    assert set(data["run"]) == set(RUN_KEYS)
    cell_keys = set(data["defaults"]) | {k for s in sections for r in s.get("rows", []) for k in r}
    assert set(FIELD_TYPES) <= cell_keys
    assert {k for s in sections for k in s} == SECTION_KEYS
    assert {k for s in sections for c in s["columns"] for k in c} == COLUMN_KEYS
    assert {k for s in sections for r in s.get("rows", []) for k in r} >= ROW_EXTRA_KEYS
    undocumented = [word for word in (*METRICS, *FORMATS) if not re.search(rf"\b{word}\b", text)]
    assert not undocumented


def test_example_runs_quickly_on_a_cpu():
    cells = load_matrix(EXAMPLE).cells()
    assert all(c.device == "cpu" and c.world_size <= 2 and c.backbone in ("none", "mbf") for c in cells)
    steps = {c: c.warmup_steps + c.num_windows * c.steps_per_window for c in cells}
    assert all(c.classes <= 10_000 and steps[c] <= (50 if c.backbone == "none" else 10) for c in cells)


def test_a_column_may_show_each_metric_of_the_registry_and_no_other(tmp_path):
    assert list(METRICS) == [
        "samples_per_s", "spread", "step_time_ms", "gpu_mem_gb", "peak_allocated_gib", "peak_rss_gib", "power_w",
        "energy_per_1k_j", "published", "ratio", "published_gpu_mem_gb", "gpu_mem_ratio", "status", "tflops", "mfu",
        "largest", "smallest_oom", "num_probes",
    ]  # fmt: skip
    shown = [f'{{ header = "{name}", field = "{name}" }}' for name in METRICS if not METRICS[name].search_only]
    body = f"columns = [{', '.join(shown)}]\nrows = [{{ batch_size = 8 }}]"
    matrix = load(tmp_path, f'[[sections]]\ntitle = "All"\n{body}\n')
    assert [c.field for c in matrix.sections[0].columns] == [c for c in METRICS if not METRICS[c].search_only]
    with pytest.raises(MatrixError, match="field: unknown field 'samples_per_sec'"):
        load(tmp_path, section("One", "rows = [{ batch_size = 8 }]").replace('batch_size" }', 'samples_per_sec" }'))
    with pytest.raises(MatrixError, match="'largest' needs a \\[sections.search\\]"):
        load(tmp_path, section("One", "rows = [{ batch_size = 8 }]").replace('batch_size" }', 'largest" }'))
