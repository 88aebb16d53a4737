"""A rank that fails after every rank has written its figures cannot turn a finished measurement into an error.

Rank 0 of real torchrun jobs is given a fault through a sitecustomize module on its PYTHONPATH
(rank 0 only: the module looks at RANK): an abort at interpreter exit, which a rank must never
reach once its figures are safe, or an abort in place of the rank's final exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.store.results import read_records
from tests.sweeps import write_matrix

pytestmark = pytest.mark.slow  # real cells

REPO = Path(__file__).resolve().parents[1]

ABORT_AT_INTERPRETER_EXIT = """
import atexit, os
if os.environ.get("RANK") == "0":
    atexit.register(os.abort)
"""

ABORT_INSTEAD_OF_EXIT = """
import os
if os.environ.get("RANK") == "0":
    exit_now = os._exit

    def abort_on_success(code):
        if code == 0:
            os.abort()
        exit_now(code)

    os._exit = abort_on_success
"""


def faulty_env(tmp_path: Path, fault: str) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(fault)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))


def test_nothing_that_runs_at_interpreter_exit_can_fail_a_finished_cell(tmp_path):
    argv = [sys.executable, "-m", "bench.cli", "cell", "--backbone", "none", "--classes", "1000", "--batch-size", "8",
            "--nproc", "2", "--device", "cpu", "--warmup-steps", "1", "--num-windows", "2", "--steps-per-window", "1",
            "--json", "--timeout", "240"]  # fmt: skip
    result = subprocess.run(argv, env=faulty_env(tmp_path, ABORT_AT_INTERPRETER_EXIT), capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "ok" and "teardown_error" not in record


def test_a_rank_that_aborts_after_every_figure_is_safe_leaves_an_ok_record_with_a_note(tmp_path):
    matrix = write_matrix(tmp_path, "8", timeout_s=240)
    argv = [sys.executable, "-m", "bench.cli", "run", str(matrix), "--results", str(tmp_path / "results")]
    result = subprocess.run(argv, env=faulty_env(tmp_path, ABORT_INSTEAD_OF_EXIT), capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 ok" in result.stdout
    [record] = read_records(tmp_path / "results" / "tiny" / "results.jsonl")
    assert record["status"] == "ok" and record["samples_per_s"] > 0
    assert len(record["step_times_s"]) == record["measured_steps"] == 4
    assert record["teardown_error"].startswith("after every rank had written its figures: torchrun exited with 1")
    assert "SIGABRT" in record["teardown_error"] or "Signal 6" in record["teardown_error"]
    assert (tmp_path / "results" / "tiny" / record["log"]).is_file()
