"""compare on two real runs of one matrix, the second with a setting that slows some cells down.

bf16 autocast on the CPU slows MobileFaceNet's convolutions down by about a fifth, and leaves the
`none` backbone (random embeddings; Partial FC always runs in fp32) as it was. So the mbf cell must
read slower and the none cell must not.
"""

from __future__ import annotations

import subprocess
import sys

MATRIX = """
name = "pair"
[defaults]
device = "cpu"
nproc_per_node = 2
batch_size = 8
classes = 20000
warmup_steps = 2
num_windows = 2
steps_per_window = 4
[[sections]]
title = "Backbones"
columns = [{ header = "Backbone", field = "backbone" }, { header = "Samples/sec", field = "samples_per_s" }]
[sections.grid]
backbone = ["none", "mbf"]
"""


def pfcbench(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def test_compare_flags_exactly_the_cells_the_setting_slowed(tmp_path):
    matrix = tmp_path / "pair.toml"
    matrix.write_text(MATRIX)
    pfcbench("run", str(matrix), "--results", str(tmp_path / "fp32"))
    pfcbench("run", str(matrix), "--results", str(tmp_path / "bf16"), "--set", "precision=bf16")
    result = pfcbench("compare", str(tmp_path / "fp32" / "pair"), str(tmp_path / "bf16" / "pair"),
                      "--ignore", "precision", "--threshold", "0.1")  # fmt: skip
    verdicts = {
        line.split("|")[2].strip(): line.split("|")[-2].strip()
        for line in result.stdout.splitlines()
        if line.startswith("|") and ("none" in line or "mbf" in line)
    }
    assert verdicts == {"none": "same", "mbf": "slower"}, result.stdout
