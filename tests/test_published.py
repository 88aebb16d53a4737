"""The six packaged reports: each matrix is its published report cell for cell.

Every matrix loads to the published rows in the published order; records holding the published
figures, rendered as published with the published server's spec, give back the report's own tables
(tests/data/nvidia_*.md, copied from insightface's benchmarks/train/); rows pfcbench cannot run are
kept in place, with the reason, and never run.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.matrix import PACKAGED, MatrixError, load_matrix
from bench.plan.build import make_plan
from bench.report import render_markdown
from tests.test_report import published_records, tables

DATA = Path(__file__).resolve().parent / "data"
ENV = json.loads((DATA / "a100_env.json").read_text())
REPORTS = ("rtx3080", "rtx3090", "v100", "a10", "a30", "a100")

PUBLISHED_ROWS = {
    "rtx3080": {"1. 2 Million Identities": 8, "2. 600K Identities": 5},
    "rtx3090": {"1. 2 Million Identities": 7, "2. 600K Identities": 5},
    "v100": {"1. 2 Million Identities": 9, "2. 600K Identities": 5},
    "a10": {"": 7},
    "a30": {"": 7},
    "a100": {"": 14},
}
"""Rows of each published table, by section title (no title: the table under the notes)."""

NOT_RUN = {"a10": ["IResNet-180"], "a30": ["IResNet-180"], "a100": ["IResNet-180", "IResNet-180", "IResNet-300"]}


def reference(name: str) -> dict[str, list[list[str]]]:
    return tables((DATA / f"nvidia_{name}.md").read_text())


def heading(title: str) -> str:
    return title or "Experiments on arcface_torch"


def as_published(matrix):
    """The matrix with the published server's spec and its line in place of the machine's."""
    report = dict(matrix.report, spec=matrix.report["published_spec"])
    report["spec_note"] = report.get("published_spec_note", "")
    return dataclasses.replace(matrix, report=report)


@pytest.fixture(scope="module", params=REPORTS)
def report(request):
    matrix = load_matrix(PACKAGED / f"{request.param}.toml")
    records = published_records(matrix)
    return request.param, matrix, render_markdown(as_published(matrix), records, ENV, as_published=True)


def test_each_matrix_has_the_published_rows_in_order(report):
    name, matrix, _ = report
    assert matrix.name == name
    assert {s.title: len(s.rows) for s in matrix.sections} == PUBLISHED_ROWS[name]
    published = reference(name)
    for section in matrix.sections:
        assert len(section.rows) == len(published[heading(section.title)]) - 1


def test_every_published_figure_is_in_its_row(report):
    name, matrix, _ = report
    published = reference(name)
    for section in matrix.sections:
        header, *rows = published[heading(section.title)]
        speed = header.index("Samples/sec")
        assert [str(row.published) if row.published == "Fail" else f"~{row.published}" for row in section.rows] == [
            r[speed] for r in rows
        ]
        if "GPU Mem(GB)" in header:
            memory = header.index("GPU Mem(GB)")
            assert [f"~{row.published_gpu_mem_gb}" for row in section.rows] == [r[memory] for r in rows]


def test_the_published_figures_render_the_reports_tables(report):
    name, _, markdown = report
    ours, published = tables(markdown), reference(name)
    assert set(published) <= set(ours)
    for title, table in published.items():
        assert ours[title] == table, title


def test_not_run_rows_on_one_cell_show_their_own_published_figures():
    # The A100 report's IResNet-180 and -300 rows at 2M classes stand on one IResNet-200 cell, whose
    # record (if that cell ran) neither row shows: each prints its own.
    matrix = load_matrix(PACKAGED / "a100.toml")
    records = published_records(matrix)
    not_run = [row for _, row in matrix.not_run_rows()]
    assert not_run[1].cell.cell_id == not_run[2].cell.cell_id
    records[not_run[1].cell.cell_id].update(samples_per_s=1234.0, gpu_mem_used_mib_max=40 * 1024)
    ours = tables(render_markdown(as_published(matrix), records, ENV, as_published=True))
    rows = ours["Experiments on arcface_torch"]
    assert [row[2] for row in rows[10:12]] == ["IResNet-180", "IResNet-300"]
    assert [row[7:] for row in rows[10:12]] == [["~2350", "~25.0"], ["~1541", "~32.6"]]


def test_the_spec_is_the_published_servers_in_as_published(report):
    name, matrix, markdown = report
    assert tables(markdown)["Test Server Spec"] == reference(name)["Test Server Spec"]
    assert "spec" not in matrix.report, "a run's report describes the machine that ran"


def test_notes_as_published(report):
    name, matrix, markdown = report
    text = (DATA / f"nvidia_{name}.md").read_text()
    separator = "\n" if matrix.report.get("tight_notes") else "\n\n"
    notes = separator.join(f"{i}. {note}" for i, note in enumerate(matrix.report["notes"], start=1))
    assert notes in text and notes in markdown


@pytest.mark.parametrize("name", REPORTS)
def test_impl_and_labels_of_the_program_that_made_it(name):
    matrix = load_matrix(PACKAGED / f"{name}.toml")
    cells = [row.cell for section in matrix.sections for row in section.rows]
    # the A30 and A100 figures came with arcface_torch's rewrite of January 2022, and its default CosFace
    made_by_2022 = name in ("a30", "a100")
    assert {cell.impl for cell in cells} == {"arcface_torch_2022" if made_by_2022 else "arcface_torch_2021"}
    assert {cell.margin for cell in cells} == {"cosface" if made_by_2022 else "arcface"}
    assert {cell.nproc_per_node * cell.nnodes for cell in cells} == {8}
    if name in ("rtx3080", "rtx3090", "v100"):
        assert {cell.label_mode for cell in cells} == {"constant"}  # SyntheticDataset's label 1
    else:
        # Record data until the data field exists; the A100's Virtual rows were SyntheticDataset.
        assert {cell.label_mode for cell in cells if cell.classes < 10**7} == {"uniform"}
        assert {cell.label_mode for cell in cells if cell.classes >= 10**7} <= {"constant"}
        assert 'data = "records"' in matrix.path.read_text() and "data_path" in matrix.description


@pytest.mark.parametrize("name", REPORTS)
def test_rows_that_cannot_run_are_kept_with_the_reason_and_never_planned(name, tmp_path):
    matrix = load_matrix(PACKAGED / f"{name}.toml")
    not_run = matrix.not_run_rows()
    assert [row.labels["Backbone"] for _, row in not_run] == NOT_RUN.get(name, [])
    assert all("not among arcface_torch's backbones at the report's commit" in row.not_run for _, row in not_run)
    plan = make_plan(matrix, tmp_path)
    planned = {cell.cell_id for cell in plan.pending()}
    assert not planned & {row.cell.cell_id for _, row in not_run}
    assert len(plan.cells) == len({r.cell.cell_id for s in matrix.sections for r in s.rows if r.not_run is None})


def test_matrices_lists_the_six_reports():
    result = CliRunner().invoke(main, ["matrices"])
    assert result.exit_code == 0, result.output
    for name in REPORTS:
        assert f"insightface's {name.upper().replace('RTX', 'RTX ')} report" in result.output


def test_plan_shows_the_cells_in_the_reports_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["plan", "a30"])
    assert result.exit_code == 0, result.output
    assert "6 of 6 cells to run" in result.output
    rows = [line.split("|") for line in result.output.splitlines() if re.match(r"\|\s+\d+ \|", line)]
    assert [(r[4].strip(), r[6].strip(), r[8].strip()) for r in rows] == [
        ("r50", "1024", "fp32"),
        ("r50", "1024", "fp32"),
        ("r50", "1024", "fp16"),
        ("r50", "1024", "fp16"),
        ("r50", "2048", "fp16"),
        ("r100", "1024", "fp16"),
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('not_run = ""', "rows[1] not_run: must be a text saying why the row cannot run, not ''"),
        ("not_run = 3", "rows[1] not_run: must be a text saying why the row cannot run, not 3"),
    ],
)
def test_a_not_run_without_a_reason_is_refused(tmp_path, row, message):
    path = tmp_path / "m.toml"
    path.write_text(f'[[sections]]\ncolumns = [{{ field = "classes" }}]\n[[sections.rows]]\n{row}\n')
    with pytest.raises(MatrixError, match=re.escape(message)):
        load_matrix(path)


def test_a_published_spec_value_must_be_text(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(
        '[report.published_spec]\nGPU = 8\n[[sections]]\ncolumns = [{ field = "classes" }]\n[[sections.rows]]\n'
    )
    with pytest.raises(MatrixError, match=r"\[report.published_spec\]: every value must be text"):
        load_matrix(path)


@pytest.mark.parametrize("name", REPORTS)
def test_the_published_report_prints_from_the_matrix_alone(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["report", name, "--as-published", "-o", "published.md"])
    assert done.exit_code == 0, done.output
    markdown = (tmp_path / "published.md").read_text()
    assert tables(markdown) == reference(name), "every published figure in place: samples/sec, Fail, GPU memory"
    assert f"from the matrix {name} alone: nothing here was measured" in markdown
    # the report and the record of what it wrote: no plot
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pfcbench-report.json", "published.md"]


def test_a100_gpu_memory_prints_from_the_matrix_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["report", "a100", "--as-published"])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == "report/a100-published.md"
    header, *rows = tables((tmp_path / "report" / "a100-published.md").read_text())["Experiments on arcface_torch"]
    memory = [row[header.index("GPU Mem(GB)")] for row in rows]
    assert memory[0] == "~18.2" and memory[-1] == "~79.6" and all(m.startswith("~") for m in memory)


def test_a_missing_results_folder_as_published_names_the_command_that_prints_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["report", "results/a100", "--as-published"])
    assert done.exit_code == 2
    assert done.output.strip().splitlines() == [
        "Error: results/a100: no such results directory; pfcbench report a100 --as-published prints the published report"
    ]
    assert list(tmp_path.iterdir()) == []
