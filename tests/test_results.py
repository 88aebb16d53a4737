"""The results file keeps every whole record, whatever happens to a write."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.results import append_record, latest_by_cell, read_records


def test_records_append_and_read_back_in_order(tmp_path):
    path = tmp_path / "r" / "results.jsonl"
    for i in range(3):
        append_record(path, {"cell_id": "a" if i < 2 else "b", "n": i})
    assert [r["n"] for r in read_records(path)] == [0, 1, 2]
    assert {k: r["n"] for k, r in latest_by_cell(read_records(path)).items()} == {"a": 1, "b": 2}


def test_a_torn_last_line_is_not_a_record_and_is_dropped_by_the_next_append(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, {"cell_id": "a", "n": 0})
    with open(path, "a") as f:
        f.write('{"cell_id": "b", "n"')  # a write cut short by a crash
    assert [r["n"] for r in read_records(path)] == [0]
    append_record(path, {"cell_id": "c", "n": 2})
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [0, 2]


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from bench.results import append_record
path = Path(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = path.stat().st_size + 100
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    append_record(path, {"cell_id": "big", "pad": "x" * 10000})
except OSError as exc:
    print(type(exc).__name__, exc.errno)
"""


def test_a_write_that_fails_for_space_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, {"cell_id": "a", "n": 0})
    before = path.read_bytes()
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("OSError"), result.stderr
    assert path.read_bytes() == before
