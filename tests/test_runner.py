"""The sweep as a user runs it: real `pfcbench run` subprocesses, killed and stalled on purpose."""

from __future__ import annotations

import json
import os
import signal

import pytest

from bench.store.results import read_records
from tests.procs import pids_with, rank_pids, wait_until
from tests.sweeps import run_sweep, start_run, write_matrix

pytestmark = pytest.mark.slow  # real sweeps


def test_kill_9_mid_cell_loses_nothing_and_the_next_run_completes(tmp_path):
    matrix = write_matrix(tmp_path, "8, 16, 32")
    results_file = tmp_path / "results" / "tiny" / "results.jsonl"
    runner = start_run(matrix, tmp_path / "results")
    second_cell_running = wait_until(
        lambda: len(read_records(results_file)) == 1 and pids_with("bench.rank.worker", str(tmp_path)), timeout_s=120
    )
    assert second_cell_running, "the first cell never finished"
    first = read_records(results_file)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()

    assert wait_until(lambda: not pids_with("bench.rank.worker", str(tmp_path)), timeout_s=15), (
        "ranks outlived the runner"
    )
    assert not pids_with("torch.distributed.run", str(tmp_path))
    assert read_records(results_file) == first

    again = run_sweep(matrix, tmp_path / "results")
    assert "2 of 3 cells to run" in again.stdout
    lines = results_file.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records[0] == first[0]
    assert sorted(r["config"]["batch_size"] for r in records) == [8, 16, 32]
    assert {r["status"] for r in records} == {"ok"}

    nothing = run_sweep(matrix, tmp_path / "results")
    assert "Nothing to run" in nothing.stdout
    assert results_file.read_text().splitlines() == lines


def test_stalled_rank_is_killed_at_the_inactivity_timeout_and_the_sweep_goes_on(tmp_path):
    matrix = write_matrix(tmp_path, "8, 16")
    # long enough for the next cell's ranks to import torch and start on a busy machine
    runner = start_run(matrix, tmp_path / "results", "--inactivity-timeout", "30")
    workdir = wait_until(lambda: next((tmp_path / "results").glob("tiny/work/*/"), None), timeout_s=60)
    assert workdir, "the first cell never started"
    stalled = wait_until(lambda: len(pids := rank_pids(str(workdir))) == 2 and pids, timeout_s=60)
    assert stalled, "the first cell's two ranks never started"
    os.kill(stalled[1], signal.SIGSTOP)
    stdout, stderr = runner.communicate(timeout=300)
    assert runner.returncode == 0, stderr

    records = read_records(tmp_path / "results" / "tiny" / "results.jsonl")
    assert [(r["config"]["batch_size"], r["status"]) for r in records] == [(8, "timeout"), (16, "ok")]
    assert "no progress for 30 s" in records[0]["error"]
    assert (tmp_path / "results" / "tiny" / records[0]["log"]).exists()
    assert "1 ok, 1 timeout" in stdout
    assert not pids_with("bench.rank.worker", str(tmp_path))


def test_sigterm_stops_the_cell_in_flight_and_records_nothing_torn(tmp_path):
    matrix = write_matrix(tmp_path, "8, 16")
    results_file = tmp_path / "results" / "tiny" / "results.jsonl"
    runner = start_run(matrix, tmp_path / "results")
    assert wait_until(lambda: pids_with("bench.rank.worker", str(tmp_path)), timeout_s=120)
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 130
    assert "Interrupted" in stderr and "Traceback" not in stderr
    assert not pids_with("bench.rank.worker", str(tmp_path))
    # The cell in flight was the first: nothing of it is recorded, and no line of the file is torn.
    assert read_records(results_file) == []
    assert not results_file.exists() or all(json.loads(line) for line in results_file.read_text().splitlines())


def test_prune_after_oom_skips_larger_batches_and_rerun_all_runs_them(tmp_path):
    matrix = write_matrix(tmp_path, "8, 16, 32")
    results_file = tmp_path / "results" / "tiny" / "results.jsonl"
    capped = ["--set", "classes=400000", "--max-memory-gib", "0.2"]
    run_sweep(matrix, tmp_path / "results", *capped, "--prune-after-oom")
    records = read_records(results_file)
    assert [(r["config"]["batch_size"], r["status"]) for r in records] == [(8, "oom"), (16, "skipped"), (32, "skipped")]
    assert all("implied by oom" in r["reason"] for r in records[1:])

    run_sweep(matrix, tmp_path / "results", *capped, "--rerun", "all")
    assert [r["status"] for r in read_records(results_file)[3:]] == ["oom", "oom", "oom"]
