"""compare as a CI gate on two real runs, the second made so much slower that no load can hide it.

Run B's cell holds 100 times the classes of run A's (backbone `none`, so the step is the
classifier): each of its steps normalises, multiplies and updates 100 times the class centres.
Compared with itself, run A passes `--fail-on slower`; compared with run B, it fails, naming the cell.
"""

from __future__ import annotations

import pytest

from tests.cli import pfcbench

pytestmark = pytest.mark.slow  # two real runs

MATRIX = """
name = "gate"
[defaults]
device = "cpu"
nproc_per_node = 2
backbone = "none"
embedding_size = 128
batch_size = 32
warmup_steps = 2
num_windows = 3
steps_per_window = 6
[[sections]]
title = "Classifier-bound cell"
columns = [{ header = "Classes", field = "classes" }, { header = "Samples/sec", field = "samples_per_s" }]
[[sections.rows]]
classes = 1000
"""


def test_fail_on_slower_passes_a_run_against_itself_and_fails_a_really_slower_one(tmp_path):
    matrix = tmp_path / "gate.toml"
    matrix.write_text(MATRIX)
    for name, classes in (("small", 1000), ("large", 100_000)):
        run = pfcbench(
            "run", str(matrix), "--results", str(tmp_path / name), "--set", f"classes={classes}", timeout_s=600
        )
        assert run.returncode == 0, run.stderr
    small, large = str(tmp_path / "small" / "gate"), str(tmp_path / "large" / "gate")
    itself = pfcbench("compare", small, small, "--fail-on", "slower")
    assert itself.returncode == 0, itself.stdout + itself.stderr
    slower = pfcbench("compare", small, large, "--ignore", "classes", "--fail-on", "slower,failing")
    assert slower.returncode == 1, slower.stdout + slower.stderr
    named = [line.strip() for line in slower.stderr.splitlines() if line.startswith("  ")]
    assert len(named) == 1 and named[0].startswith("slower: cell "), slower.stderr
    assert "(backbone none, classes 1000, batch_size 32, " in named[0]
    ratio = float(named[0].split(", ")[-1].split("x)")[0])
    assert ratio < 0.5, named[0]
