"""The memory model: traced predictions, `plan` with predictions, `run --skip-predicted-fail`."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.config import Cell
from bench.memory import CLASSIFIER_STATE, CPU_ONLY, GPU_ONLY, MIB, PARTS, Todo, Tracer, predict_cells
from bench.store.results import read_records
from tests.sweeps import run_sweep, write_matrix

pytestmark = pytest.mark.slow  # memory traces of real steps

CLASSIFIER_ONLY = Cell(backbone="none", classes=200_000, batch_size=256, nproc_per_node=2, device="cpu")


def test_prediction_holds_the_shard_and_grows_with_classes_and_gpu():
    small, large, on_gpu = predict_cells([
        CLASSIFIER_ONLY,
        dataclasses.replace(CLASSIFIER_ONLY, classes=400_000),
        dataclasses.replace(CLASSIFIER_ONLY, device="cuda"),
    ])  # fmt: skip
    shard_bytes = 100_000 * 512 * 4
    assert list(small.parts) == list(PARTS)
    assert sum(small.parts.values()) == small.peak_bytes
    # the centres and their momentum are held at the peak, and the logits of 256 x 100K beside them
    assert small.parts[CLASSIFIER_STATE] >= 2 * shard_bytes
    assert small.peak_bytes >= 2 * shard_bytes + 256 * 100_000 * 4
    assert 1.8 < large.peak_bytes / small.peak_bytes < 2.2
    assert small.parts[GPU_ONLY] == 0 and on_gpu.parts[CPU_ONLY] == 0
    assert on_gpu.parts[GPU_ONLY] > 100 * MIB and small.parts[CPU_ONLY] > 0
    assert on_gpu.peak_bytes - on_gpu.parts[GPU_ONLY] == small.peak_bytes - small.parts[CPU_ONLY]


def test_plan_json_predicts_per_cell_in_plan_order(tmp_path):
    matrix = write_matrix(tmp_path, "8, 64", oom=True)
    result = CliRunner().invoke(
        main, ["plan", str(matrix), "--results", str(tmp_path / "results"), "--json", "--memory-gib", "0.5"]
    )
    assert result.exit_code == 0, result.output
    entries = json.loads(result.output)
    assert [(e["config"]["classes"], e["config"]["batch_size"]) for e in entries] == [
        (1000, 8),
        (1000, 64),
        (200000, 16),
    ]
    assert {e["status"] for e in entries} == {"pending"}
    assert [e["predicted_fits"] for e in entries] == [True, True, False]
    assert entries[2]["predicted_peak_gib"] > 0.5 > entries[1]["predicted_peak_gib"]
    assert all(len(e["cell_id"]) == 12 for e in entries)


def test_plan_without_memory_size_predicts_no_fit(tmp_path):
    matrix = write_matrix(tmp_path, "8")
    result = CliRunner().invoke(main, ["plan", str(matrix), "--results", str(tmp_path / "results"), "--json"])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)
    assert entry["predicted_fits"] is None and entry["predicted_peak_gib"] > 0
    table = CliRunner().invoke(main, ["plan", str(matrix), "--results", str(tmp_path / "results"), "--predict"])
    assert "predicted: 0 Fail, 0 fit, 1 with no memory size to hold them to (--memory-gib N)" in table.output


def test_plan_table_shows_fail_against_memory_size(tmp_path):
    matrix = write_matrix(tmp_path, "8", oom=True)
    result = CliRunner().invoke(main, ["plan", str(matrix), "--results", str(tmp_path / "r"), "--memory-gib", "0.5"])
    assert result.exit_code == 0, result.output
    assert "Fail (0.5 GiB)" in result.output and "fits (0.5 GiB)" in result.output
    assert "predicted: 1 Fail, 1 fit" in result.output


def test_run_skip_predicted_fail_records_skipped_with_the_prediction(tmp_path):
    matrix = write_matrix(tmp_path, "8", oom=True)
    run_sweep(matrix, tmp_path / "results", "--skip-predicted-fail")
    records = {r["config"]["classes"]: r for r in read_records(tmp_path / "results" / "tiny" / "results.jsonl")}
    assert records[1000]["status"] == "ok"
    assert records[200000]["status"] == "skipped"
    assert "predicted peak" in records[200000]["reason"] and "> 0.5 GiB" in records[200000]["reason"]


def test_plan_puts_the_published_figures_beside_the_prediction(tmp_path):
    matrix = tmp_path / "published.toml"
    matrix.write_text(
        '[defaults]\nbackbone = "none"\ndevice = "cpu"\nnproc_per_node = 2\nbatch_size = 8\n'
        '[[sections]]\ncolumns = [{ field = "classes" }]\n'
        "[[sections.rows]]\nclasses = 1000\npublished = 2190\npublished_gpu_mem_gb = 0.3\n"
        '[[sections.rows]]\nclasses = 200000\npublished = "Fail"\n'
        "[[sections.rows]]\nclasses = 2000\n"
    )
    result = CliRunner().invoke(main, ["plan", str(matrix), "--results", str(tmp_path / "r"), "--memory-gib", "0.5"])
    assert result.exit_code == 0, result.output
    header, _, *rows = [[c.strip() for c in line.strip("|").split("|")] for line in result.output.splitlines()[:5]]
    shown = [dict(zip(header, row)) for row in rows]
    assert [row["published"] for row in shown] == ["~2190", "Fail", ""]
    assert [row["published GPU Mem(GB)"] for row in shown] == ["~0.3", "", ""]
    assert [row["predicted"] for row in shown] == ["fits (0.5 GiB)", "Fail (0.5 GiB)", "fits (0.5 GiB)"]

    entries = json.loads(
        CliRunner().invoke(main, ["plan", str(matrix), "--results", str(tmp_path / "r"), "--json"]).output
    )
    assert [(e.get("published"), e.get("published_gpu_mem_gb")) for e in entries] == [
        (2190, 0.3),
        ("Fail", None),
        (None, None),
    ]


@pytest.mark.parametrize("impl", ["arcface_torch_2021", "arcface_torch_2022"])
def test_a_cells_prediction_does_not_depend_on_the_cells_traced_before_it(impl):
    # These impls swap a new Parameter of sampled centres in each step: the last step's must be
    # freed at the same point of every trace, whatever the garbage collector did before.
    cell = Cell(
        backbone="none", classes=8_000_000, batch_size=1024, nproc_per_node=8, device="cuda",
        sample_rate=0.1, precision="fp16", impl=impl,
    )  # fmt: skip
    with contextlib.closing(Tracer(num_workers=1)) as tracer:  # one process, the cache unread
        traces = [trace for _, trace in tracer.trace_cells([cell] * 4)]
    assert len(traces) == 4
    assert len({t["peak_bytes"] for t in traces}) == 1, [t["peak_bytes"] for t in traces]
    assert len({tuple(t["parts"].items()) for t in traces}) == 1


def test_trace_workers_each_keep_to_one_backbone_step():
    # A worker's FakeTensorMode cache answers the backbone ops of the step it traced last, so each worker
    # takes the cells of one step while another step is left for the other worker.
    r100, r50 = (Cell(backbone=b, batch_size=512, nproc_per_node=8) for b in ("r100", "r50"))
    cells = [dataclasses.replace(c, classes=n) for c in (r100, r50) for n in (1000, 2000)]
    todo = Todo(cells)
    taken = [todo.take(worker) for worker in (1, 2, 1, 2, 1)]
    assert [index for index, _ in taken[:4]] == [0, 2, 1, 3]
    assert [cell.backbone for _, cell in taken[:4]] == ["r100", "r50", "r100", "r50"]
    assert taken[4] is None
