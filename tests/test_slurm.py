"""`pfcbench run --launcher slurm` against a real single-host Slurm (tests/slurm_cluster.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

from bench.launch.ledger import add_job, read_ledger
from bench.matrix import load_matrix
from bench.plan.build import PlanSource, plan_again, plan_in
from bench.store.results import read_records
from tests.procs import pids_with, rank_pids, wait_until
from tests.sweeps import run_sweep, start_run, write_matrix

pytestmark = pytest.mark.xdist_group("slurm")  # one test worker runs every Slurm test, beside the Slurm it starts


def test_slurm_options_without_the_slurm_launcher_are_a_usage_error(tmp_path):
    matrix = write_matrix(tmp_path, "8")
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(matrix), "--results", str(tmp_path), "--partition", "gpu"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert "need --launcher slurm" in done.stderr
    assert not (tmp_path / "tiny").exists()


SECOND_SECTION = """
[[sections]]
title = "Classes"
columns = [{ header = "Classes", field = "classes" }, { header = "Samples/sec", field = "samples_per_s" }]
[sections.grid]
batch_size = [8]
classes = [1000, 2000]
"""


def test_the_ledger_keeps_what_builds_the_plan_of_the_run_that_submitted_the_job(tmp_path):
    path = write_matrix(tmp_path, "8, 16")
    path.write_text(path.read_text() + SECOND_SECTION)
    results_dir = tmp_path / "results" / "tiny"
    results_dir.mkdir(parents=True)
    (results_dir / "matrix.toml").write_text(path.read_text())  # the copy a run keeps
    matrix = load_matrix(path, {"nproc_per_node": 1, "sample_rate": 0.5}).only_sections((2,))
    run = plan_in(matrix, results_dir, "failed")
    cell = run.cells[1]
    add_job(results_dir, "7", cell.cell_id, cell.to_dict(), results_dir / "work" / "x", run.source)

    entry = read_ledger(results_dir)["7"]
    again = plan_again(results_dir, entry.source)
    assert again.source == run.source and again.rerun == "failed"
    assert [c.cell_id for c in again.cells] == [c.cell_id for c in run.cells] and again.sections == run.sections
    assert again.sections_of(cell) == ["Classes"] and again.matrix.overrides["nproc_per_node"] == 1
    # an entry written before entries kept their plan reads as the whole matrix without overrides
    written = json.loads((results_dir / "in-flight.json").read_text())["7"]
    written_before = {key: written[key] for key in ("cell_id", "config", "workdir", "submitted_at")}
    assert PlanSource.of_entry(written_before) == PlanSource()


@pytest.mark.slow
def test_a_sweep_through_slurm_records_what_the_local_runner_records(slurm_cluster, tmp_path):
    matrix = write_matrix(tmp_path, "8", oom=True)
    local = run_sweep(matrix, tmp_path / "local")
    slurm = run_sweep(matrix, tmp_path / "slurm", "--launcher", "slurm")

    by_slurm = read_records(tmp_path / "slurm" / "tiny" / "results.jsonl")
    by_local = read_records(tmp_path / "local" / "tiny" / "results.jsonl")
    assert Counter(r["status"] for r in by_slurm) == Counter(r["status"] for r in by_local) == {"ok": 1, "oom": 1}
    assert "1 ok, 1 oom" in slurm.stdout and "1 ok, 1 oom" in local.stdout
    assert {r["cell_id"] for r in by_slurm} == {r["cell_id"] for r in by_local}
    assert all(r["slurm_job_id"] for r in by_slurm)
    ok = next(r for r in by_slurm if r["status"] == "ok")
    assert ok["samples_per_s"] > 0 and len(ok["ranks"]) == 2 and ok["slurm_state"] == "COMPLETED"
    oom = next(r for r in by_slurm if r["status"] == "oom")
    assert "can't allocate memory" in oom["error"]
    assert "Slurm job" in (tmp_path / "slurm" / "tiny" / oom["log"]).read_text()
    env = json.loads((tmp_path / "slurm" / "tiny" / ok["env"]).read_text())
    assert env["launcher"] == "slurm" and env["nodes"] == ok["hosts"] and env["submitted_from"]
    assert env["gpus"] == [] and env["cpu_cores"] >= 1  # the compute node's, with the devices its ranks used

    again = run_sweep(matrix, tmp_path / "slurm", "--launcher", "slurm")
    assert "Nothing to run" in again.stdout
    assert read_records(tmp_path / "slurm" / "tiny" / "results.jsonl") == by_slurm
    assert slurm_cluster.queue() == []


@pytest.mark.slow
def test_a_cell_of_two_nodes_runs_as_one_job_over_both(slurm_cluster, tmp_path):
    matrix = write_matrix(tmp_path, "8")
    run_sweep(matrix, tmp_path / "results", "--launcher", "slurm", "--nnodes", "2", "--nproc", "1")

    [record] = read_records(tmp_path / "results" / "tiny" / "results.jsonl")
    assert record["status"] == "ok", record.get("error")
    assert record["world_size"] == 2 and [r["rank"] for r in record["ranks"]] == [0, 1]
    assert record["samples_per_s"] > 0


@pytest.mark.slow
def test_a_cell_slurm_cannot_start_is_an_error_with_slurms_message(slurm_cluster, tmp_path):
    matrix = write_matrix(tmp_path, "8")
    done = run_sweep(matrix, tmp_path / "results", "--launcher", "slurm", "--partition", "nosuch")
    [record] = read_records(tmp_path / "results" / "tiny" / "results.jsonl")
    assert record["status"] == "error" and record["slurm_job_id"] is None
    assert "Invalid partition name specified" in record["error"]
    assert "1 error" in done.stdout


@pytest.mark.slow
def test_sigterm_to_the_sweep_cancels_its_job(slurm_cluster, tmp_path):
    matrix = write_matrix(tmp_path, "8, 16", steps=500)
    runner = start_run(matrix, tmp_path / "results", "--launcher", "slurm")
    beating = wait_until(lambda: next((tmp_path / "results").glob("tiny/work/*/heartbeat"), None), timeout_s=120)
    assert beating, "the first cell's ranks never started"
    [job] = slurm_cluster.queue()
    assert job.endswith("RUNNING")
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=60)

    assert runner.returncode == 130, stderr
    assert "Interrupted" in stderr and "Traceback" not in stderr
    assert slurm_cluster.queue() == []
    assert wait_until(lambda: not pids_with("bench.rank.worker", str(tmp_path)), timeout_s=10), "left running"
    assert read_records(tmp_path / "results" / "tiny" / "results.jsonl") == []


@pytest.mark.slow
def test_a_cell_over_its_slurm_time_limit_is_a_timeout(slurm_cluster, tmp_path):
    matrix = write_matrix(tmp_path, "8", steps=100_000, timeout_s=600, inactivity_s=600)
    runner = start_run(matrix, tmp_path / "results", "--launcher", "slurm", "--slurm-time", "1")
    # the ranks hang (stopped) until Slurm ends the job at its limit, a minute at the least: no CPU spent on it
    ranks = wait_until(lambda: len(pids := rank_pids(str(tmp_path))) == 2 and pids, timeout_s=120)
    assert ranks, "the cell's two ranks never started"
    for pid in ranks:
        os.kill(pid, signal.SIGSTOP)
    stdout, stderr = runner.communicate(timeout=300)
    assert runner.returncode == 0, stderr

    [record] = read_records(tmp_path / "results" / "tiny" / "results.jsonl")
    assert record["status"] == "timeout" and record["slurm_state"] == "TIMEOUT"
    assert "time limit (00:01:00)" in record["error"]
    assert "1 timeout" in stdout
    assert slurm_cluster.queue() == []


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--partition", "gpu\nqos"),
        ("--account", ""),
        ("--account", "proj;id"),
        ("--sbatch-arg", "extra-job.sh"),
        ("--sbatch-arg", "--comment=`id`"),
        ("--cpus-per-gpu", "0"),
    ],
)
def test_a_slurm_option_sbatch_would_misread_is_refused_before_anything_is_submitted(tmp_path, option, value):
    matrix = write_matrix(tmp_path, "8")
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(matrix), "--results", str(tmp_path), "--launcher", "slurm",
         option, value],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert option in line and "Traceback" not in done.stderr
    assert not (tmp_path / "tiny").exists()
