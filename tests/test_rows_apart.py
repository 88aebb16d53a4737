"""Cells that differ only in a field a table or line does not always name (tf32, records against
synthetic data, a memory cap) are told apart: `plan` gets a column for the field, the progress line of
`run` says it, the report across machines names it in its table and its plot, and a field left at
None reads as what it means ("no cap"), never "None"."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.cli import main
from bench.commands.lines import cell_line, line_fields
from bench.matrix import PACKAGED, load_matrix
from bench.report.plots import row_label, varying_fields
from tests.sweeps import run_sweep
from tests.test_report import published_records
from tests.test_report_across import A100_ENV, RTX3080_ENV, across, results_folder

TWINS = """
name = "twins"
[run]
timeout_s = 120
inactivity_timeout_s = 60
[defaults]
backbone = "none"
device = "cpu"
nproc_per_node = 2
classes = 1000
batch_size = 8
warmup_steps = 1
num_windows = 2
steps_per_window = 2
[[sections]]
title = "Twins"
columns = [{ header = "Samples/sec", field = "samples_per_s" }]
[sections.grid]
AXES
"""
"""A matrix whose cells differ only in the grid's axes, none of them a field the plan always shows."""


def twins(tmp_path: Path, axes: str) -> Path:
    path = tmp_path / "twins.toml"
    path.write_text(TWINS.replace("AXES", axes))
    return path


def plan_table(*args: str) -> tuple[list[str], list[list[str]]]:
    done = CliRunner().invoke(main, ["plan", *args])
    assert done.exit_code == 0, done.output
    header, *rows = [
        [c.strip() for c in line.strip("|").split("|")] for line in done.output.splitlines() if line.startswith("| ")
    ]
    return header, rows


def without(header: list[str], rows: list[list[str]], *names: str) -> set[tuple[str, ...]]:
    """The rows as a reader compares them, less the columns named (the cell id, which says nothing to a reader)."""
    keep = [i for i, name in enumerate(header) if name not in names]
    return {tuple(row[i] for i in keep) for row in rows}


def test_plan_a100_shows_tf32_and_no_two_rows_read_the_same(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    header, rows = plan_table("a100")
    tf32 = header.index("tf32")
    assert [row[tf32] for row in rows[:4]] == ["off", "on", "off", "on"]
    assert len(without(header, rows, "#", "cell", "published", "status")) == len(rows)


def test_plan_shows_which_cells_read_records_and_which_synthetic_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    header, rows = plan_table(str(twins(tmp_path, 'data = ["synthetic", "records"]')))
    assert [row[header.index("data")] for row in rows] == ["synthetic", "records"]
    assert "tf32" not in header, "a field every cell has alike gets no column"


def test_a_memory_cap_of_none_reads_no_cap_in_the_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    header, rows = plan_table("smoke")
    caps = [row[header.index("max memory gib")] for row in rows]
    assert set(caps) == {"no cap", "0.5"}


def test_progress_lines_say_tf32_records_and_a_cap_where_cells_differ_in_them():
    a100 = load_matrix(PACKAGED / "a100.toml").cells()
    shown = line_fields(a100)
    fp32, fp32_tf32 = (cell_line(cell, shown) for cell in a100[:2])
    assert "tf32" not in fp32 and ", tf32," in fp32_tf32
    smoke = load_matrix(PACKAGED / "smoke.toml").cells()
    lines = [cell_line(cell, line_fields(smoke)) for cell in smoke]
    assert "capped at 0.5 GiB" in lines[-1] and not any("None" in line or "cap" in line for line in lines[:-1])


def test_progress_lines_tell_records_from_synthetic_cells(tmp_path):
    cells = load_matrix(twins(tmp_path, 'data = ["synthetic", "records"]')).cells()
    synthetic, records = (cell_line(cell, line_fields(cells)) for cell in cells)
    assert "records" in records and "records" not in synthetic


@pytest.mark.slow
def test_the_progress_lines_of_a_run_tell_the_tf32_cell_apart(tmp_path):
    done = run_sweep(twins(tmp_path, "tf32 = [false, true]"), tmp_path / "results")
    progress = [line.split(":")[0] for line in done.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 2 and len(set(line.split("] ")[1] for line in progress)) == 2, done.stderr
    assert ["tf32" in line for line in progress] == [False, True], done.stderr


def drawn(monkeypatch) -> list[Figure]:
    figures: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: figures.append(figure))
    return figures


def two_a100_machines(tmp_path: Path) -> list[Path]:
    """The first four cells of the A100 report (fp32 and fp16, each with TF32 off and on) on two machines."""
    records = list(published_records(load_matrix(PACKAGED / "a100.toml")).values())[:4]
    slower = [dict(r, samples_per_s=r["samples_per_s"] / 2) for r in records]
    return [results_folder(tmp_path / "a", "a100", records, A100_ENV), results_folder(tmp_path / "b", "a100", slower, RTX3080_ENV)]  # fmt: skip


def test_the_report_across_machines_names_tf32_in_its_table_and_plot(tmp_path, monkeypatch):
    figures = drawn(monkeypatch)
    rows, _ = across(tmp_path, two_a100_machines(tmp_path))
    header = next(row for row in rows if "tf32" in row)
    cells = rows[rows.index(header) + 1 :]
    assert [row[header.index("tf32")] for row in cells] == ["off", "on", "off", "on"]
    fields = header[: header.index("tf32") + 1]
    assert len({tuple(row[: len(fields)]) for row in cells}) == len(cells) == 4
    labels = [label.get_text() for label in figures[0].axes[0].get_yticklabels()]
    assert len(set(labels)) == 4 and labels[0].endswith("tf32 off") and labels[1].endswith("tf32 on")


def test_the_legend_across_machines_lies_below_the_bars(tmp_path, monkeypatch):
    figures = drawn(monkeypatch)
    across(tmp_path, two_a100_machines(tmp_path))
    (figure,) = figures
    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # lays the figure out as savefig does
    legend = (figure.legends or [figure.axes[0].get_legend()])[0]
    renderer = canvas.get_renderer()
    below, axes = legend.get_window_extent(renderer), figure.axes[0].get_window_extent(renderer)
    assert below.y1 <= axes.y0, "the legend is drawn over the bars"
    assert [text.get_text() for text in legend.get_texts()] == ["8 x NVIDIA A100-SXM4-80GB", "8 x GeForce RTX™ 3080"]


def test_no_memory_cap_reads_no_cap_across_machines_and_in_the_section_plot(tmp_path, monkeypatch):
    smoke = load_matrix(PACKAGED / "smoke.toml")
    records = [
        {"cell_id": c.cell_id, "config": c.to_dict(), "status": "ok", "samples_per_s": 100.0}
        if c.max_memory_gib is None
        else {"cell_id": c.cell_id, "config": c.to_dict(), "status": "oom"}
        for c in smoke.cells()
    ]
    folders = [results_folder(tmp_path / "a", "smoke", records, A100_ENV), results_folder(tmp_path / "b", "smoke", records, RTX3080_ENV)]  # fmt: skip
    figures = drawn(monkeypatch)
    rows, markdown = across(tmp_path, folders)
    header = next(row for row in rows if "max_memory_gib" in row)
    caps = [row[header.index("max_memory_gib")] for row in rows[rows.index(header) + 1 :]]
    assert set(caps) == {"no cap", "0.5"} and "None" not in markdown
    labels = [label.get_text() for label in figures[0].axes[0].get_yticklabels()]
    assert all("None" not in label for label in labels) and "max_memory_gib no cap" in labels[0]
    section = next(s for s in smoke.sections if any(row.cell.max_memory_gib for row in s.rows))
    section_labels = [row_label(row, varying_fields(section)) for row in section.rows]
    assert "max_memory_gib no cap" in section_labels[0] and not any("None" in label for label in section_labels)
