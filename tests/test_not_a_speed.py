"""A cell whose loss was not finite ran its steps, but their cost is not a training speed: every output
says NaN (or why) where the speed would stand, and none counts it: not the progress line, the `cell`
line, the tables, the plots, the hours and cost of a run, the plan, the report across machines or
compare; `--rerun failed` runs it again."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from matplotlib.figure import Figure

from bench.cli import main
from bench.config import Cell
from bench.matrix import load_matrix
from bench.report.machines import write_machines_report
from bench.report.plots import plot_section
from bench.store.results import append_record, read_results
from tests.cli import pfcbench
from tests.sweeps import run_sweep, write_matrix
from tests.test_report import tables

DATA = Path(__file__).resolve().parent / "data"
SPEED = dict(samples_per_s=50.0, samples_per_s_min=48.0, samples_per_s_max=52.0, samples_per_s_windows=[50.0] * 3)
NAN = dict(SPEED, nonfinite_losses=4, measured_steps=4, loss_last=math.nan)


def record(cell: Cell, **figures) -> dict:
    return {
        "schema": 1,
        "cell_id": cell.cell_id,
        "config": cell.to_dict(),
        "status": "ok",
        "duration_s": 5.0,
        **figures,
    }


@pytest.mark.slow
def test_a_sweep_that_trains_nan_shows_no_speed_anywhere_and_reruns_as_failed(tmp_path, monkeypatch):
    matrix = write_matrix(tmp_path, "8, 16")
    results = tmp_path / "results"
    poisoned = dict(os.environ, PFCBENCH_TEST_FAULTS="nan@0")
    first = pfcbench("run", str(matrix), "--results", str(results), env=poisoned)
    assert first.returncode == 0, first.stderr
    progress = [line for line in first.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 2 and all("NaN loss, no training speed" in line for line in progress), first.stderr
    assert "ran 2 cells" in first.stdout and "2 NaN loss;" in first.stdout
    assert not any("samples/s" in line for line in progress)
    records = read_results(results / "tiny" / "results.jsonl").records
    assert [r["status"] for r in records] == ["ok", "ok"] and all(r["nonfinite_losses"] for r in records)

    monkeypatch.chdir(tmp_path)
    shutil.copytree(results / "tiny", tmp_path / "before")
    done = CliRunner().invoke(main, ["report", str(results / "tiny"), "--train-on", "ms1mv2", "--gpu-hour-price", "2"])
    assert done.exit_code == 0, done.output
    markdown = (tmp_path / "report" / "tiny.md").read_text()
    header, *rows = tables(markdown)["Batch"]
    speed = header.index("Samples/sec")
    assert [row[speed : speed + 3] for row in rows] == [["NaN", "", ""]] * 2
    assert "NaN: the loss was not finite, so samples/sec are not a training speed" in markdown

    plan = CliRunner().invoke(main, ["plan", str(matrix), "--results", str(results), "--train-on", "ms1mv2", "--json"])
    entries = json.loads(plan.output)
    assert [(e["status"], e["not_a_speed"], e["samples_per_s"]) for e in entries] == [("ok", "NaN loss", None)] * 2
    assert not any("hours_per_run" in e for e in entries)

    again = run_sweep(matrix, results, "--rerun", "failed")
    assert "2 of 2 cells to run" in again.stdout, again.stdout
    latest = read_results(results / "tiny" / "results.jsonl").records[2:]
    assert [r["nonfinite_losses"] for r in latest] == [0, 0] and all(math.isfinite(r["loss_last"]) for r in latest)
    compare = CliRunner().invoke(main, ["compare", str(tmp_path / "before"), str(results / "tiny")])
    assert compare.output.count("incomparable (A: NaN loss)") == 2, compare.output


@pytest.mark.slow
def test_the_cell_line_of_a_nan_loss_names_it_instead_of_a_speed():
    argv = ["cell", "--backbone", "none", "--classes", "1000", "--batch-size", "8", "--nproc", "2", "--device", "cpu"]
    done = pfcbench(*argv, "--warmup-steps", "1", "--num-windows", "2", "--steps-per-window", "2",
                    env=dict(os.environ, PFCBENCH_TEST_FAULTS="nan@1"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert "ok, but NaN loss: no training speed" in line and "samples/s" not in line


def drawn(monkeypatch) -> list[Figure]:
    """The figures the plots save, kept to look at."""
    figures: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: figures.append(figure))
    return figures


def test_a_section_plot_draws_no_point_for_a_nan_cell_and_marks_it(tmp_path, monkeypatch):
    matrix = load_matrix(write_matrix(tmp_path, "8, 16"))
    section = matrix.sections[0]
    first, second = (row.cell for row in section.rows)
    figures = drawn(monkeypatch)
    plot_section(
        section, {first.cell_id: record(first, **SPEED), second.cell_id: record(second, **NAN)}, tmp_path / "p"
    )
    speed_axis = figures[0].axes[0]
    points = list(speed_axis.lines[0].get_ydata())
    assert points[0] == 50.0 and math.isnan(points[1])
    assert [text.get_text() for text in speed_axis.texts] == ["NaN"]


def test_the_report_across_machines_shows_nan_and_draws_no_bar(tmp_path, monkeypatch):
    matrix = write_matrix(tmp_path, "8")
    cell = load_matrix(matrix).sections[0].rows[0].cell
    folders = []
    for name, figures in (("rtx3080_env", SPEED), ("a100_env", NAN)):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copyfile(matrix, folder / "matrix.toml")
        shutil.copyfile(DATA / f"{name}.json", folder / "env.json")
        append_record(folder / "results.jsonl", record(cell, power_w=100.0, **figures))
        folders.append(folder)
    figures = drawn(monkeypatch)
    out, _ = write_machines_report(folders, out=tmp_path / "machines.md")
    markdown = out.read_text()
    header, row = machine_rows(markdown)
    rtx, a100 = "8 x GeForce RTX™ 3080", "8 x NVIDIA A100-SXM4-80GB"
    assert header[-3:] == [rtx, f"{rtx} samples/s/W", a100]  # no samples/s/W of a NaN cell
    assert row[-3:] == ["~50", "0.50", "NaN"]
    assert "NaN: the loss was not finite, so samples/sec are not a training speed" in markdown
    assert [bar.get_width() for bar in figures[0].axes[0].patches] == [50.0, 0]
    assert [text.get_text() for text in figures[0].axes[0].texts] == ["NaN"]


def machine_rows(markdown: str) -> tuple[list[str], list[str]]:
    """The header and the one row of the table across machines (the second table of the page)."""
    rows = [line for line in markdown.splitlines() if line.startswith("|") and "---" not in line]
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in rows]
    return table[-2], table[-1]
