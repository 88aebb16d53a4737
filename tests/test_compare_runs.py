"""compare on two real runs of one matrix, the second with a setting that slows some cells down.

Partial FC's sample rate decides how many class centres a step normalises, multiplies and updates
through the softmax. Raised from 0.1 to 1.0, it slows a cell whose step is the classifier (backbone
`none`, 100K classes) about twofold, and leaves a cell whose step is the backbone (MobileFaceNet,
100 classes) as it was. So the first must read slower and the second must not.
"""

from __future__ import annotations

import subprocess
import sys

MATRIX = """
name = "pair"
[defaults]
device = "cpu"
nproc_per_node = 2
sample_rate = 0.1
warmup_steps = 2
num_windows = 2
steps_per_window = 4
[[sections]]
title = "Classifier-bound and backbone-bound cells"
columns = [{ header = "Backbone", field = "backbone" }, { header = "Samples/sec", field = "samples_per_s" }]
[[sections.rows]]
backbone = "none"
classes = 100000
batch_size = 32
[[sections.rows]]
backbone = "mbf"
classes = 100
batch_size = 8
"""


def pfcbench(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def test_compare_flags_exactly_the_cells_the_setting_slowed(tmp_path):
    matrix = tmp_path / "pair.toml"
    matrix.write_text(MATRIX)
    pfcbench("run", str(matrix), "--results", str(tmp_path / "pfc"))
    pfcbench("run", str(matrix), "--results", str(tmp_path / "full"), "--set", "sample_rate=1.0")
    result = pfcbench("compare", str(tmp_path / "pfc" / "pair"), str(tmp_path / "full" / "pair"),
                      "--ignore", "sample_rate", "--threshold", "0.3")  # fmt: skip
    verdicts = {
        line.split("|")[2].strip(): line.split("|")[-2].strip()
        for line in result.stdout.splitlines()
        if line.startswith("|") and ("none" in line or "mbf" in line)
    }
    assert verdicts == {"none": "slower", "mbf": "same"}, result.stdout
