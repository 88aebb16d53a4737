"""`pfcbench report` beyond one machine's tables: the published server's report, rows not run,
hours and cost of a training run, and one table across several machines' results folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.matrix import PACKAGED, load_matrix
from bench.report.training_runs import DATASETS
from bench.store.results import append_record, latest_by_cell, read_results
from tests.sweeps import run_sweep, write_matrix
from tests.test_report import published_records, tables

DATA = Path(__file__).resolve().parent / "data"
RTX3080_ENV = json.loads((DATA / "rtx3080_env.json").read_text())
A100_ENV = json.loads((DATA / "a100_env.json").read_text())
RTX, A100 = "8 x GeForce RTX™ 3080", "8 x NVIDIA A100-SXM4-80GB"
"""The machines named from their env: GPU model and count."""


def results_folder(path: Path, name: str, records: list[dict], env: dict) -> Path:
    path.mkdir(parents=True)
    shutil.copyfile(PACKAGED / f"{name}.toml", path / "matrix.toml")
    (path / "env.json").write_text(json.dumps(env))
    for record in records:
        append_record(path / "results.jsonl", record)
    return path


def report(*args: str):
    return CliRunner().invoke(main, ["report", *args])


def test_hours_and_cost_per_run_are_the_formulas(tmp_path, monkeypatch):
    rtx3080 = load_matrix(PACKAGED / "rtx3080.toml")
    folder = results_folder(tmp_path / "r", "rtx3080", list(published_records(rtx3080).values()), RTX3080_ENV)
    monkeypatch.chdir(tmp_path)
    done = report(str(folder), "--train-on", "webface42m", "--epochs", "20", "--gpu-hour-price", "2.5")
    assert done.exit_code == 0, done.output
    header, *rows = tables((tmp_path / "report" / "rtx3080.md").read_text())["1. 2 Million Identities"]
    speed = header.index("Samples/sec")
    assert header[speed + 1 : speed + 3] == ["Hours/run (WebFace42M x 20 epochs)", "Cost/run (at 2.5/GPU-h)"]
    images = DATASETS["webface42m"].num_image
    checked = 0
    for row in rows:
        if row[speed] == "Fail":
            assert row[speed + 1 : speed + 3] == ["", ""]
            continue
        samples_per_s = float(row[speed].lstrip("~"))  # the published figures are whole numbers
        hours = images * 20 / samples_per_s / 3600
        assert row[speed + 1 : speed + 3] == [f"{hours:,.1f}", f"{hours * 8 * 2.5:,.0f}"]
        checked += 1
    assert checked >= 3
    assert "images x epochs / samples per second" in (tmp_path / "report" / "rtx3080.md").read_text()


def test_images_and_epochs_name_the_run(tmp_path, monkeypatch):
    rtx3080 = load_matrix(PACKAGED / "rtx3080.toml")
    folder = results_folder(tmp_path / "r", "rtx3080", list(published_records(rtx3080).values()), RTX3080_ENV)
    monkeypatch.chdir(tmp_path)
    assert report(str(folder), "--images", "1000000", "--epochs", "2").exit_code == 0
    header = tables((tmp_path / "report" / "rtx3080.md").read_text())["2. 600K Identities"][0]
    assert "Hours/run (1,000,000 images x 2 epochs)" in header


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train-on", "nosuch"], "no dataset named 'nosuch'"),
        (["--train-on", "webface42m", "--images", "10"], "not both"),
        (["--images", "10"], "--images needs --epochs"),
        (["--epochs", "3"], "--epochs needs --train-on"),
        (["--gpu-hour-price", "2"], "--gpu-hour-price needs --train-on"),
        (
            ["--images", "0", "--epochs", "2"],
            "--images must be a whole number of at least 1 and at most 1,000,000,000,000, not 0",
        ),
        (
            ["--train-on", "ms1mv3", "--epochs", "0"],
            "--epochs must be a whole number of at least 1 and at most 1,000,000, not 0",
        ),
        (["--train-on", "ms1mv3", "--gpu-hour-price", "-1"], "--gpu-hour-price must be a price of at least 0"),
    ],
)
def test_bad_training_values_are_refused_in_one_line(tmp_path, args, message):
    done = report(str(tmp_path), *args)
    assert done.exit_code == 2
    assert done.output.count("\n") == 1 and message in done.output


def test_as_published_is_the_published_report_with_its_rows_not_run(tmp_path, monkeypatch):
    a10 = load_matrix(PACKAGED / "a10.toml")
    run = {k: r for k, r in published_records(a10).items() if k in {c.cell_id for c in a10.cells()}}
    folder = results_folder(tmp_path / "a10", "a10", list(run.values()), A100_ENV)
    monkeypatch.chdir(tmp_path)
    assert report(str(folder), "--as-published", "-o", "published.md").exit_code == 0
    markdown = (tmp_path / "published.md").read_text()
    reference = tables((DATA / "nvidia_a10.md").read_text())
    for title, table in reference.items():
        assert tables(markdown)[title] == table, title
    assert "Not run: a published row pfcbench does not run" in markdown and "IResNet-180 is not among" in markdown

    assert report(str(folder), "-o", "measured.md").exit_code == 0
    measured = tables((tmp_path / "measured.md").read_text())
    assert measured["Test Server Spec"] != reference["Test Server Spec"], "a run's report describes the machine"
    header, *rows = measured["Experiments on arcface_torch"]
    not_run = [row for row in rows if "IResNet-180" in row]
    assert len(not_run) == 1 and not_run[0][header.index("Samples/sec")] == "Not run"
    assert not_run[0][header.index("Published")] == "~1410"


def test_plan_lists_the_rows_it_does_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["plan", "a100"])
    assert done.exit_code == 0, done.output
    lines = [line for line in done.output.splitlines() if line.startswith("not run: ")]
    assert len(lines) == 3 and all("IResNet-180" in line or "IResNet-300" in line for line in lines)


def test_plan_gives_hours_per_run_where_the_cell_has_run(tmp_path, monkeypatch):
    rtx3080 = load_matrix(PACKAGED / "rtx3080.toml")
    ran = [record for record in published_records(rtx3080).values() if record["status"] == "ok"][:2]
    ran[0]["samples_per_s"] = 2190.4
    results_folder(tmp_path / "results" / "rtx3080", "rtx3080", ran, RTX3080_ENV)
    monkeypatch.chdir(tmp_path)
    args = ["plan", "rtx3080", "--train-on", "WebFace42M", "--epochs", "20", "--gpu-hour-price", "2.5"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    header, *rows = [
        [c.strip() for c in line.strip("|").split("|")] for line in done.output.splitlines() if line.startswith("| ")
    ]
    assert header[-3:] == ["samples/s", "Hours/run (WebFace42M x 20 epochs)", "Cost/run (at 2.5/GPU-h)"]
    by_cell = {row[header.index("cell")]: row[-3:] for row in rows}
    images = DATASETS["webface42m"].num_image
    for record in ran:
        hours = images * 20 / record["samples_per_s"] / 3600
        assert by_cell.pop(record["cell_id"]) == [
            f"{record['samples_per_s']:,.0f}",
            f"{hours:,.1f}",
            f"{hours * 8 * 2.5:,.0f}",
        ]
    assert by_cell and all(figures == ["", "", ""] for figures in by_cell.values()), "cells not run have no figures"

    refused = CliRunner().invoke(main, ["plan", "rtx3080", "--epochs", "20"])
    assert refused.exit_code == 2 and "--epochs needs --train-on" in refused.output


def test_a_cpu_cell_has_hours_but_no_gpu_hours_to_price(tmp_path, monkeypatch):
    smoke = load_matrix(PACKAGED / "smoke.toml")
    cell = smoke.cells()[0]
    ran = {"cell_id": cell.cell_id, "config": cell.to_dict(), "status": "ok", "samples_per_s": 100.0}
    folder = results_folder(tmp_path / "results" / "smoke", "smoke", [ran], RTX3080_ENV | {"gpus": []})
    monkeypatch.chdir(tmp_path)
    pricing = ["--train-on", "ms1mv3", "--epochs", "20", "--gpu-hour-price", "2.5"]
    done = report(str(folder), *pricing)
    assert done.exit_code == 0, done.output
    markdown = (tmp_path / "report" / "smoke.md").read_text()
    header, row = next(table[:2] for table in tables(markdown).values() if "Cost/run (at 2.5/GPU-h)" in table[0])
    hours = DATASETS["ms1mv3"].num_image * 20 / 100.0 / 3600
    assert row[header.index("Hours/run (MS1MV3 x 20 epochs)")] == f"{hours:,.1f}"
    assert row[header.index("Cost/run (at 2.5/GPU-h)")] == "no GPU"
    assert "a CPU cell uses no GPU-hours" in markdown

    planned = CliRunner().invoke(main, ["plan", "smoke", *pricing])
    assert planned.exit_code == 0, planned.output
    header, *rows = [
        [c.strip() for c in line.strip("|").split("|")] for line in planned.output.splitlines() if line.startswith("| ")
    ]
    [row] = [row for row in rows if row[header.index("cell")] == cell.cell_id]
    assert row[-2:] == [f"{hours:,.1f}", "no GPU"]


def across(tmp_path: Path, folders: list[Path]) -> tuple[list[list[str]], str]:
    done = report(*map(str, folders), "-o", str(tmp_path / "across.md"))
    assert done.exit_code == 0, done.output
    markdown = (tmp_path / "across.md").read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if "---" not in line], markdown


def test_two_machines_side_by_side_with_published_and_per_watt(tmp_path):
    rtx3080 = load_matrix(PACKAGED / "rtx3080.toml")
    records = list(published_records(rtx3080).values())
    first = results_folder(tmp_path / "a", "rtx3080", records, RTX3080_ENV)
    faster = [
        dict(r, samples_per_s=r["samples_per_s"] * 2, power_w=400.0) if r["status"] == "ok" else r for r in records
    ]
    second = results_folder(tmp_path / "b", "rtx3080", faster[1:], A100_ENV)
    rows, markdown = across(tmp_path, [first, second])
    header = next(row for row in rows if "Published" in row)
    cells = rows[rows.index(header) + 1 :]
    assert {RTX, A100, f"{A100} samples/s/W"} <= set(header)
    a, b = header.index(RTX), header.index(A100)
    assert len(cells) == len(rtx3080.cells())
    assert cells[0][b] == "—" and cells[0][a] != "—", "a cell one machine lacks is marked, not dropped"
    ok = next(row for row in cells if row[a].startswith("~") and row[b] != "—")
    assert int(ok[b].lstrip("~")) == pytest.approx(2 * int(ok[a].lstrip("~")), abs=1)
    assert ok[header.index("Published")] == ok[a]
    assert float(ok[b + 1]) == pytest.approx(int(ok[b].lstrip("~")) / 400, abs=0.01)
    assert (tmp_path / "across.png").stat().st_size > 0 and "![samples/sec across machines](across.png)" in markdown


def test_several_folders_refuse_single_folder_options(tmp_path):
    done = report(str(tmp_path), str(tmp_path), "--format", "csv")
    assert done.exit_code == 2 and "several results folders" in done.output


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory):
    """A tiny matrix of two cells and an out-of-memory one, run for real once; a copy of it
    re-described as another machine."""
    root = tmp_path_factory.mktemp("tiny")
    run_sweep(write_matrix(root, "8, 16", oom=True), root / "cpu")
    cpu, other = root / "cpu" / "tiny", root / "gpu" / "tiny"
    shutil.copytree(cpu, other)
    for env in [other / "env.json", *(other / "env").glob("*.json")]:
        if env.exists():
            env.write_text(json.dumps(A100_ENV))
    records = read_results(other / "results.jsonl").records
    (other / "results.jsonl").unlink()
    for record in records[1:]:
        append_record(other / "results.jsonl", record)
    return cpu, other


@pytest.mark.slow
def test_a_run_on_two_machines_is_one_table(tmp_path, two_machines):
    cpu, gpu = two_machines
    rows, markdown = across(tmp_path, [cpu, gpu])
    cpu_name = json.loads(next((cpu / "env").glob("*.json")).read_text())["cpu_model"]
    header = next(row for row in rows if cpu_name in row and A100 in row)  # under the list of machines
    cells = rows[rows.index(header) + 1 :]
    latest = latest_by_cell(read_results(cpu / "results.jsonl").records)
    assert len(cells) == len(latest) == 3
    assert cells[0][header.index(A100)] == "—"
    assert any(row[header.index(cpu_name)].startswith("~") for row in cells)
    assert "Fail" in {row[header.index(cpu_name)] for row in cells}
    assert (tmp_path / "across.png").exists()


def test_importing_the_report_package_loads_neither_pandas_nor_torch():
    probe = "import sys, bench.report, bench.report.marks; print(sorted({'torch', 'pandas', 'matplotlib'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
