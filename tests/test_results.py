"""The results file keeps every whole record, whatever happens to a write, and says what it skipped."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.config import Cell
from bench.store.results import append_record, latest_by_cell, read_records, read_results
from tests.sweeps import write_matrix


def record(n: int, cell_id: str = "a", **extra) -> dict:
    return {"cell_id": cell_id, "status": "ok", "config": {}, "n": n, **extra}


def test_records_append_and_read_back_in_order(tmp_path):
    path = tmp_path / "r" / "results.jsonl"
    for i in range(3):
        append_record(path, record(i, "a" if i < 2 else "b"))
    assert [r["n"] for r in read_records(path)] == [0, 1, 2]
    assert {k: r["n"] for k, r in latest_by_cell(read_records(path)).items()} == {"a": 1, "b": 2}


def test_a_torn_last_line_is_not_a_record_and_is_dropped_by_the_next_append(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record(0))
    with open(path, "a") as f:
        f.write('{"cell_id": "b", "n"')  # a write cut short by a crash
    assert [r["n"] for r in read_records(path)] == [0]
    assert read_results(path).skipped == [(2, "cut short (the file ends inside it)")]
    append_record(path, record(2, "c"))
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [0, 2]


def test_a_tail_of_zeros_longer_than_any_chunk_is_cut_and_every_record_kept(tmp_path):
    path = tmp_path / "results.jsonl"
    for i in range(3):
        append_record(path, record(i))
    with open(path, "ab") as f:
        f.write(b"\0" * (3 * 2**20 + 777))  # what a power loss can leave after the last fsync
    append_record(path, record(3))
    assert [r["n"] for r in read_records(path)] == [0, 1, 2, 3]
    assert path.stat().st_size < 1000


def test_a_whole_last_record_without_its_newline_is_kept_by_readers_and_by_the_next_append(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record(0))
    with open(path, "a") as f:
        f.write(json.dumps(record(1)))
    assert [r["n"] for r in read_records(path)] == [0, 1]
    append_record(path, record(2))
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [0, 1, 2]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"\x9b\xff\x00garbage", "not JSON"),
        (b"[" * 20000 + b"]" * 20000, "not JSON"),
        (b'{"name": "not a record"}', "not a record"),
        (b'{"cell_id": 7, "status": "ok", "config": {}}', "not a record"),
        (b'{"cell_id": "a", "status": "ok", "config": {}, "schema": "two"}', "schema"),
        (b'"just text"', "not a record"),
    ],
)
def test_lines_that_are_not_records_are_skipped_and_counted(tmp_path, line, why):
    path = tmp_path / "results.jsonl"
    append_record(path, record(0))
    with open(path, "ab") as f:
        f.write(line + b"\n")
    append_record(path, record(1))
    results = read_results(path)
    assert [r["n"] for r in results.records] == [0, 1]
    assert [number for number, _ in results.skipped] == [2] and why in results.skipped[0][1]
    assert f"{path}: skipped 1 line(s)" in results.warning() and "line 2" in results.warning()


def test_random_bytes_are_skipped_line_by_line_and_named_in_the_warning(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record(0))
    with open(path, "ab") as f:
        f.write(random.Random(5).randbytes(3 * 2**20) + b"\n")
    append_record(path, record(1))
    results = read_results(path)
    assert [r["n"] for r in results.records] == [0, 1]
    assert len(results.skipped) > 100 and results.warning().startswith(f"{path}: skipped")
    assert len(results.warning()) < 400


def test_a_record_of_a_newer_schema_is_refused_not_misread(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record(0))
    append_record(path, record(1, schema=3))
    with pytest.raises(ValueError, match=r"line 2 is a record of schema 3, newer than this pfcbench reads \(1\)"):
        read_results(path)


def test_a_results_file_that_is_a_folder_or_a_fifo_is_one_line(tmp_path):
    (tmp_path / "dir.jsonl").mkdir()
    os.mkfifo(tmp_path / "fifo.jsonl")
    with pytest.raises(ValueError, match="is a folder"):
        read_results(tmp_path / "dir.jsonl")
    with pytest.raises(ValueError, match="not a regular file"):
        read_results(tmp_path / "fifo.jsonl")
    with pytest.raises(ValueError, match="not a regular file"):
        append_record(tmp_path / "fifo.jsonl", record(0))


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from bench.store.results import append_record
path = Path(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = path.stat().st_size + 100
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    append_record(path, {"cell_id": "big", "status": "ok", "config": {}, "pad": "x" * 10000})
except OSError as exc:
    print(type(exc).__name__, exc.errno)
"""


def test_a_write_that_fails_for_space_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record(0))
    before = path.read_bytes()
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("OSError"), result.stderr
    assert path.read_bytes() == before


DAMAGE = {
    "torn line": b'{"cell_id": "0123456789ab", "status": "o',
    "zeros after a power loss": b"\0" * (2 * 2**20 + 4099),
    "garbage line in the middle": b"\xde\xad\xbe\xef not json\n",
}


@pytest.mark.parametrize("damage", [*DAMAGE, "whole record without newline"])
def test_a_writer_killed_mid_record_loses_no_whole_record_and_plan_and_report_say_what_they_skipped(
    tmp_path, monkeypatch, damage
):
    """Records of a tiny sweep, the file damaged as a dying writer leaves it, then the next run.

    Cell 1 ran out of memory, so the next run with --prune-after-oom records the larger batches as
    skipped (implied by it) without training anything: a real `pfcbench run` that appends.
    """
    monkeypatch.chdir(tmp_path)
    matrix = write_matrix(tmp_path, "8, 16, 32")
    results = tmp_path / "results" / "tiny"
    path = results / "results.jsonl"
    cells = [Cell(backbone="none", device="cpu", nproc_per_node=2, classes=1000, warmup_steps=1, num_windows=2,
                  steps_per_window=2, batch_size=b) for b in (8, 16, 32)]  # fmt: skip
    oom = {"schema": 1, "cell_id": cells[0].cell_id, "config": cells[0].to_dict(), "status": "oom"}
    other = {"schema": 1, "cell_id": "feedfacecafe", "config": {"batch_size": 4}, "status": "error"}
    append_record(path, other)
    whole = [other, oom]
    if damage == "whole record without newline":
        with open(path, "ab") as f:
            f.write(json.dumps(oom).encode())
        skipped_lines = []
    else:
        append_record(path, oom)
        with open(path, "ab") as f:
            f.write(DAMAGE[damage])
        if damage == "garbage line in the middle":
            append_record(path, other)
            whole.append(other)
        skipped_lines = [3]

    plan = CliRunner().invoke(main, ["plan", str(matrix), "--results", "results"])
    assert plan.exit_code == 0, plan.output
    assert ("skipped 1 line(s)" in plan.stderr and "line 3" in plan.stderr) == bool(skipped_lines), plan.stderr
    assert "2 of 3 cells to run" in plan.stdout

    (results / "matrix.toml").write_text(matrix.read_text())
    (results / "env.json").write_text(json.dumps({"cpu_model": "x", "cpu_sockets": 1, "memory_gib": 1, "os": "y",
                                                  "python": "3", "torch": "2"}))  # fmt: skip
    report = CliRunner().invoke(main, ["report", str(results), "--format", "csv", "-o", "out.csv"])
    assert report.exit_code == 0, report.output
    assert ("skipped 1 line(s)" in report.stderr) == bool(skipped_lines), report.stderr

    run = CliRunner().invoke(main, ["run", str(matrix), "--results", "results", "--prune-after-oom"])
    assert run.exit_code == 0, run.output
    records = read_records(path)
    assert records[: len(whole)] == whole
    assert [r["status"] for r in records[len(whole) :]] == ["skipped", "skipped"]
    assert [number for number, _ in read_results(path).skipped] == ([3] if "middle" in damage else [])
