"""compare on two real runs of one matrix, the second with a setting that makes the cell far slower.

A real run can only show a change that no load on the machine can hide or fake: here the
embedding grows from 8 to 512 floats in a cell whose step is the classifier alone (backbone
`none`, 20K classes), which multiplies the work of every step by 64 and slows it about twentyfold.
A busy machine slows both runs by a factor of a few at most, so B still reads slower; whether
small changes read "same" or not is load's to decide, and is tested on records in test_compare.py.
"""

from __future__ import annotations

import subprocess
import sys

MATRIX = """
name = "pair"
[defaults]
device = "cpu"
nproc_per_node = 2
warmup_steps = 2
num_windows = 3
steps_per_window = 4
[[sections]]
title = "A classifier-bound cell"
columns = [{ header = "Embedding", field = "embedding_size" }, { header = "Samples/sec", field = "samples_per_s" }]
[[sections.rows]]
backbone = "none"
classes = 20000
batch_size = 32
embedding_size = 8
"""


def pfcbench(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def test_compare_of_real_runs_flags_a_cell_the_setting_made_far_slower(tmp_path):
    matrix = tmp_path / "pair.toml"
    matrix.write_text(MATRIX)
    pfcbench("run", str(matrix), "--results", str(tmp_path / "small"))
    pfcbench("run", str(matrix), "--results", str(tmp_path / "large"), "--set", "embedding_size=512")
    result = pfcbench("compare", str(tmp_path / "small" / "pair"), str(tmp_path / "large" / "pair"),
                      "--ignore", "embedding_size", "--threshold", "0.5")  # fmt: skip
    header, _, *rows = [line for line in result.stdout.splitlines() if line.startswith("|")]
    names = [name.strip() for name in header.split("|")]
    [row] = [dict(zip(names, (text.strip() for text in line.split("|")))) for line in rows]
    assert row["verdict"] == "slower", result.stdout
    assert float(row["ratio"]) < 0.5 and float(row["p-value"]) < 0.01, result.stdout
