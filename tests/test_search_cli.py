"""`pfcbench search` as a user runs it: real probe cells under a CPU memory cap, interrupted and resumed."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys

import pytest

from bench.store.results import read_records
from tests.cli import pfcbench
from tests.procs import pids_with, wait_until

pytestmark = pytest.mark.slow  # real probe cells

SEARCH = ["search", "classes", "--backbone", "none", "--batch-size", "64", "--nproc", "2", "--device", "cpu"]
CAP = ["--max-memory-gib", "1.5"]
START = 200_000


def start_search(results) -> subprocess.Popen:
    """The search as a terminal starts it: Ctrl-C reaches it even where this test runs with SIGINT ignored
    (a background job of a shell), which Python would otherwise pass on to the search."""
    argv = [sys.executable, "-m", "bench.cli", *SEARCH, *CAP, "--start", str(START), "--results", str(results)]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def stop_during_probe(results, signum: int, num_recorded: int) -> subprocess.CompletedProcess:
    """Start a search and send it signum once num_recorded probes are recorded and the next is running."""
    results_file = results / "search" / "results.jsonl"
    search = start_search(results)
    running = wait_until(
        lambda: len(read_records(results_file)) == num_recorded and pids_with("bench.rank.worker", str(results)),
        timeout_s=600,
    )
    assert running, f"the search never got to probe {num_recorded + 1}"
    os.kill(search.pid, signum)
    stdout, stderr = search.communicate(timeout=60)
    assert wait_until(lambda: not pids_with("bench.rank.worker", str(results)), timeout_s=15), (
        "ranks outlived the search"
    )
    return subprocess.CompletedProcess(search.args, search.returncode, stdout, stderr)


def test_search_answers_resumes_after_kill_9_and_ctrl_c_and_its_bounds_hold(tmp_path):
    results = tmp_path / "results"
    results_file = results / "search" / "results.jsonl"
    stop_during_probe(results, signal.SIGKILL, 1)
    first = read_records(results_file)
    interrupted = stop_during_probe(results, signal.SIGINT, 2)
    assert interrupted.returncode == 130
    assert "run again to continue" in interrupted.stderr
    assert read_records(results_file)[:1] == first

    done = pfcbench(*SEARCH, *CAP, "--start", str(START), "--results", str(results), "--json", timeout_s=900)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["field"] == "classes" and answer["start"] == START
    largest, smallest_oom = answer["largest"], answer["smallest_oom"]
    assert largest < smallest_oom <= largest * 1.05
    probes = answer["probes"]
    assert [p["recorded_before"] for p in probes[:2]] == [True, True]
    assert probes[0] == dict(first[0], recorded_before=True)
    values = [p["config"]["classes"] for p in probes]
    assert sorted(values) == sorted({r["config"]["classes"] for r in read_records(results_file)})
    assert len(values) == len(set(values)) == len(read_records(results_file)), "a recorded probe ran again"
    assert abs(START / largest - 1) <= 0.15, f"start {START} is not within 15% of {largest}"
    assert len(probes) <= 4
    assert not pids_with("bench.rank.worker", str(tmp_path))

    fresh = ["--backbone", "none", "--batch-size", "64", "--nproc", "2", "--device", "cpu", *CAP, "--warmup-steps", "1",
             "--num-windows", "1", "--steps-per-window", "2", "--json"]  # fmt: skip
    fits = json.loads(pfcbench("cell", "--classes", str(largest), *fresh).stdout)
    assert fits["status"] == "ok"
    assert fits["flops_per_sample"] == 6 * 512 * largest
    too_many = json.loads(pfcbench("cell", "--classes", str(smallest_oom), *fresh).stdout)
    assert too_many["status"] == "oom"


SEARCH_MATRIX = """
name = "fits"
[run]
timeout_s = 300
[defaults]
backbone = "none"
device = "cpu"
nproc_per_node = 2
batch_size = 16
warmup_steps = 1
num_windows = 1
steps_per_window = 2

[[sections]]
title = "Speed"
columns = [{ header = "Classes", field = "classes" }, { header = "TFLOP/s", field = "tflops" },
           { header = "MFU", field = "mfu" }]
rows = [{ classes = 1000 }]

[[sections]]
title = "Largest class count that fits in 0.5 GiB"
columns = [{ header = "Batch-size", field = "batch_size" }, { header = "Largest", field = "largest" },
           { header = "Out of memory at", field = "smallest_oom" }, { header = "Probes", field = "num_probes" },
           { header = "Samples/sec", field = "samples_per_s" }]
rows = [{ classes = 70000, max_memory_gib = 0.5 }]
[sections.search]
field = "classes"
"""


def test_a_matrix_search_section_runs_its_probes_and_reports_the_largest_class_count(tmp_path):
    matrix = tmp_path / "fits.toml"
    matrix.write_text(SEARCH_MATRIX)
    results = tmp_path / "results"
    ran = pfcbench("run", str(matrix), "--results", str(results), timeout_s=900)
    assert ran.returncode == 0, ran.stderr
    assert "1 of 1 cells to run and 1 searches" in ran.stdout
    records = read_records(results / "fits" / "results.jsonl")
    probes = [r for r in records if r["sections"] == ["Largest class count that fits in 0.5 GiB"]]
    assert {r["status"] for r in probes} == {"ok", "oom"}
    largest = max(r["config"]["classes"] for r in probes if r["status"] == "ok")
    smallest_oom = min(
        r["config"]["classes"] for r in probes if r["status"] == "oom" and r["config"]["classes"] > largest
    )
    assert smallest_oom <= largest * 1.05

    again = pfcbench("run", str(matrix), "--results", str(results), timeout_s=900)
    assert "Nothing to run" in again.stdout

    out = tmp_path / "fits.md"
    assert pfcbench("report", str(results / "fits"), "-o", str(out)).returncode == 0
    speed_table, fits_table = tables(out.read_text())
    speed = next(r for r in records if r["config"]["classes"] == 1000)
    assert speed_table == [{"Classes": "1000", "TFLOP/s": f"{speed['achieved_tflops']:.2f}", "MFU": ""}]
    ok = next(r for r in probes if r["config"]["classes"] == largest)
    assert fits_table == [
        {
            "Batch-size": "16",
            "Largest": str(largest),
            "Out of memory at": str(smallest_oom),
            "Probes": str(len(probes)),
            "Samples/sec": f"~{round(ok['samples_per_s'])}",
        }
    ]


def tables(markdown: str) -> list[list[dict[str, str]]]:
    """Every table of a markdown report, as rows keyed by header."""
    found, lines = [], markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
            block = [cells(row) for row in itertools.takewhile(lambda row: row.startswith("|"), lines[i:])]
            found.append([dict(zip(block[0], row)) for row in block[2:]])
    return found[1:]  # the first is the server spec


def cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]
