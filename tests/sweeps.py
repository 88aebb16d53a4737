"""A tiny CPU matrix, and `pfcbench run` on it as a real process, for the sweep tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.cli import start_pfcbench

TINY = """
name = "tiny"
[run]
timeout_s = TIMEOUT
inactivity_timeout_s = INACTIVITY
[defaults]
backbone = "none"
device = "cpu"
nproc_per_node = 2
classes = 1000
warmup_steps = 1
num_windows = 2
steps_per_window = STEPS
[[sections]]
title = "Batch"
columns = [{ header = "Batch-size", field = "batch_size" }, { header = "Samples/sec", field = "samples_per_s" }]
[sections.grid]
batch_size = [BATCHES]
"""

OOM_ROW = """
[[sections.rows]]
batch_size = 16
classes = 200000
max_memory_gib = 0.5
"""


def write_matrix(
    tmp_path: Path, batches: str, *, steps: int = 2, timeout_s: int = 120, inactivity_s: int = 60, oom: bool = False
) -> Path:
    path = tmp_path / "tiny.toml"
    text = TINY.replace("BATCHES", batches).replace("STEPS", str(steps)).replace("TIMEOUT", str(timeout_s))
    text = text.replace("INACTIVITY", str(inactivity_s))
    path.write_text(text + (OOM_ROW if oom else ""))
    return path


def start_run(matrix: Path, results: Path, *extra: str, **popen: object) -> subprocess.Popen:
    """`pfcbench run MATRIX --results RESULTS ...` as a real process, its output piped."""
    return start_pfcbench("run", str(matrix), "--results", str(results), *extra, **popen)


def run_sweep(matrix: Path, results: Path, *extra: str) -> subprocess.CompletedProcess:
    """`pfcbench run` to its end, which must be a success."""
    proc = start_run(matrix, results, *extra)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
