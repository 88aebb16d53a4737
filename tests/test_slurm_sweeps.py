"""Sweeps of several Slurm jobs at once that outlive the process that submitted them (tests/slurm_cluster.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bench.store.results import read_records
from tests.cli import pfcbench
from tests.procs import wait_until
from tests.sweeps import run_sweep, start_run, write_matrix
from tests.test_report import tables

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]


def counting_sbatch(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose sbatch logs each call to the returned file, then runs the real one."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "sbatch-calls"
    bin_dir.mkdir()
    wrapper = bin_dir / "sbatch"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {shutil.which("sbatch")} "$@"\n')
    wrapper.chmod(0o755)
    calls.touch()
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}"), calls


def ledger(results: Path) -> dict:
    path = results / "tiny" / "in-flight.json"
    return json.loads(path.read_text()) if path.exists() else {}


def jobs_running(cluster, count: int) -> bool:
    return sum(line.endswith("RUNNING") for line in cluster.queue()) == count


def test_kill_9_with_two_jobs_in_flight_then_run_again_adopts_both(slurm_cluster, tmp_path):
    matrix = write_matrix(tmp_path, "8, 16", steps=60)
    env, calls = counting_sbatch(tmp_path)
    results = tmp_path / "results"
    sweep = ("--launcher", "slurm", "--max-jobs", "2", "--nproc", "1")
    first = start_run(matrix, results, *sweep, env=env)
    assert wait_until(lambda: len(ledger(results)) == 2 and jobs_running(slurm_cluster, 2), timeout_s=120)
    first.kill()
    first.communicate()

    again = start_run(matrix, results, *sweep, env=env)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert len(calls.read_text().splitlines()) == 2  # one sbatch per cell in the whole story
    records = read_records(results / "tiny" / "results.jsonl")
    assert sorted(r["config"]["batch_size"] for r in records) == [8, 16]
    assert {r["status"] for r in records} == {"ok"}
    assert len({r["slurm_job_id"] for r in records}) == 2
    assert ledger(results) == {} and slurm_cluster.queue() == []
    # each job was given one CPU (one rank, --cpus-per-task=1): its rank runs one thread, whatever the host has
    assert [rank["threads"] for r in records for rank in r["ranks"]] == [1, 1]


def test_detach_returns_at_once_status_follows_and_collect_records_without_submitting(slurm_cluster, tmp_path):
    matrix = write_matrix(tmp_path, "8, 16", steps=20)
    env, calls = counting_sbatch(tmp_path)
    results = tmp_path / "results"
    started = time.monotonic()
    detached = pfcbench("run", str(matrix), "--results", str(results), "--launcher", "slurm", "--max-jobs", "2",
                        "--nproc", "1", "--section", "1", "--detach", env=env, timeout_s=60)  # fmt: skip
    assert detached.returncode == 0, detached.stderr
    assert time.monotonic() - started < 20
    assert "detached" in detached.stdout and len(ledger(results)) == 2

    status = pfcbench("status", str(results / "tiny"))
    assert status.returncode == 0, status.stderr
    for job_id in ledger(results):
        assert f"job {job_id}" in status.stdout
    assert any(word in status.stdout for word in ("queued", "running"))

    assert wait_until(lambda: slurm_cluster.queue() == [], timeout_s=180)
    assert pfcbench("status", str(results / "tiny")).stdout.splitlines()[-1] == "2 done"
    collected = pfcbench("collect", str(results / "tiny"), env=env)
    assert collected.returncode == 0, collected.stderr
    records = read_records(results / "tiny" / "results.jsonl")
    assert sorted(r["status"] for r in records) == ["ok", "ok"]
    assert [(r["overrides"], r["sections"]) for r in records] == [({"nproc_per_node": 1}, ["Batch"])] * 2
    assert ledger(results) == {}
    again = run_sweep(matrix, results, "--launcher", "slurm", "--nproc", "1")
    assert "Nothing to run" in again.stdout
    assert len(calls.read_text().splitlines()) == 2

    reported = pfcbench("report", str(results / "tiny"), "-o", str(tmp_path / "tiny.md"))
    assert reported.returncode == 0, reported.stderr
    header, *rows = tables((tmp_path / "tiny.md").read_text())["Batch"]
    speeds = [row[header.index("Samples/sec")] for row in rows]
    assert [row[0] for row in rows] == ["8", "16"] and all(float(s.lstrip("~")) > 0 for s in speeds), speeds


def test_collect_reads_a_ledger_written_before_entries_kept_their_plan(slurm_cluster, tmp_path):
    matrix = write_matrix(tmp_path, "8")
    results = tmp_path / "results"
    detached = pfcbench("run", str(matrix), "--results", str(results), "--launcher", "slurm", "--detach")
    assert detached.returncode == 0, detached.stderr
    old_keys = ("cell_id", "config", "workdir", "submitted_at")
    old = {job_id: {key: entry[key] for key in old_keys} for job_id, entry in ledger(results).items()}
    (results / "tiny" / "in-flight.json").write_text(json.dumps(old, indent=1))

    assert wait_until(lambda: slurm_cluster.queue() == [], timeout_s=180)
    assert pfcbench("status", str(results / "tiny")).stdout.splitlines()[-1] == "1 done"
    collected = pfcbench("collect", str(results / "tiny"))
    assert collected.returncode == 0, collected.stderr
    assert "recorded 1 cells" in collected.stdout
    [record] = read_records(results / "tiny" / "results.jsonl")
    assert record["status"] == "ok" and record["slurm_job_id"] in old and record["sections"] == ["Batch"]
    assert ledger(results) == {}


def test_a_job_requeued_in_its_timed_windows_is_recorded_from_its_second_run_only(slurm_cluster, tmp_path):
    matrix = write_matrix(tmp_path, "8", steps=150)
    results = tmp_path / "results"
    runner = start_run(matrix, results, "--launcher", "slurm", "--nproc", "1")
    assert wait_until(lambda: next(results.glob("tiny/work/*/heartbeat"), None), timeout_s=120)
    [job_id] = ledger(results)
    requeued_at = time.time()
    subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True)
    _, stderr = runner.communicate(timeout=400)
    assert runner.returncode == 0, stderr

    [record] = read_records(results / "tiny" / "results.jsonl")
    assert record["status"] == "ok" and record["slurm_job_id"] == job_id
    assert record["started_at"] > requeued_at  # timed from the run Slurm started again
