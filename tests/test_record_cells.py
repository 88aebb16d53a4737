"""Cells that read record files, and cells whose figures are not a training speed, as a user meets them.

The slow tests run real 2-rank CPU cells (backbone none, batch 8, one window). Where a test needs a
step of known length or a rank that misbehaves it sets PFCBENCH_TEST_FAULTS (bench/workload/faults.py):
a sleep in each step stands in for the step's work, so that the verdicts do not hang on how busy the
machine's cores are.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bench.cli import main
from bench.verdicts import NONFINITE
from bench.workload.recordio import IDX_NAME, REC_NAME, IRHeader, RecWriter, pack
from tests.test_data_cli import BAD, corrupt_at, offset_of

CELL = ["--backbone", "none", "--classes", "4", "--batch-size", "8", "--nproc", "2", "--device", "cpu"]
CELL += ["--warmup-steps", "1", "--num-windows", "1", "--steps-per-window", "3", "--data", "records"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def one_line(result) -> str:
    assert "Traceback" not in result.output
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("made") / "faces"
    assert invoke("dataset", "make", str(root), "--images", "40", "--classes", "4").exit_code == 0
    return root


@pytest.fixture
def faces(made, tmp_path):
    root = tmp_path / "faces"
    shutil.copytree(made, root)
    return root


def refused(tmp_path: Path, *args: str) -> str:
    """The one line of a refused records cell, checked to have written nothing."""
    workdir = tmp_path / "work"
    line = one_line(invoke("cell", *CELL, "--workdir", str(workdir), *args))
    assert not workdir.exists()
    return line


BAD_FOR_A_CELL = {
    **BAD,
    "label at or above classes": (lambda r: None, "label 4 is not below the cell's classes (4)"),
    "fewer images than one global batch": (lambda r: None, "40 images, fewer than one global batch (64)"),
}
EXTRA_ARGS = {"label at or above classes": ["--classes", "4"], "fewer images than one global batch": []}


@pytest.mark.parametrize("case", BAD_FOR_A_CELL, ids=list(BAD_FOR_A_CELL))
def test_a_records_cell_on_bad_data_is_refused_before_it_runs(faces, tmp_path, case):
    spoil, words = BAD_FOR_A_CELL[case]
    spoil(faces)
    args = ["--data-path", str(faces)]
    if case == "label at or above classes":
        (faces / "train.idx").unlink(), (faces / "train.rec").unlink()
        write_dataset(faces, [np.zeros((8, 8, 3), np.uint8)] * 16, labels=[4] * 16, num_classes=5)
    if case == "fewer images than one global batch":
        args += ["--batch-size", "64"]
    line = refused(tmp_path, *args)
    assert words in line and "data_path" in line


def test_a_wrong_magic_number_is_refused(faces, tmp_path):
    corrupt_at(faces / "train.rec", offset_of(faces, 1), b"\x01\x02\x03\x04")
    assert "wrong magic number" in refused(tmp_path, "--data-path", str(faces))


def test_a_records_matrix_without_data_path_is_refused_naming_the_key(tmp_path):
    line = one_line(invoke("run", "a10", "--set", "device=cpu", "--results", str(tmp_path / "results")))
    assert "data_path" in line and "--set data_path=DIR" in line
    assert not (tmp_path / "results").exists()


def test_data_path_on_a_synthetic_cell_is_refused_not_ignored(made, tmp_path):
    plain = [arg for arg in CELL if arg not in ("--data", "records")]
    workdir = tmp_path / "work"
    line = one_line(invoke("cell", *plain, "--data-path", str(made), "--workdir", str(workdir)))
    assert f"data_path {made}: cell" in line and 'data = "synthetic"' in line and not workdir.exists()
    results = tmp_path / "results"
    line = one_line(invoke("run", "smoke", "--set", f"data_path={made}", "--results", str(results)))
    assert "smoke" in line and 'data = "synthetic", which reads no files' in line and not results.exists()


def write_dataset(root: Path, images: list[np.ndarray], labels: list[int], num_classes: int) -> None:
    """A record dataset in insightface's layout from given images (pfcbench dataset make writes only 112x112 faces)."""
    root.mkdir(parents=True, exist_ok=True)
    with RecWriter(root / REC_NAME, root / IDX_NAME) as writer:
        for key, (image, label) in enumerate(zip(images, labels), start=1):
            out = io.BytesIO()
            Image.fromarray(image).save(out, format="JPEG", quality=95)
            writer.write(key, pack(IRHeader(0, float(label), key, 0), out.getvalue()))
        first = len(images) + 1
        writer.write(0, pack(IRHeader(2, (float(first), float(first + num_classes)), 0, 0), b""))


def run_cell(*args: str, faults: str = "") -> dict:
    env = dict(os.environ, PFCBENCH_TEST_FAULTS=faults)
    argv = [sys.executable, "-m", "bench.cli", "cell", *CELL, *args, "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_a_records_cell_runs_and_records_its_loader_wait_per_window(made):
    record = run_cell("--data-path", str(made))
    assert record["status"] == "ok", record.get("error")
    assert len(record["loader_wait_s_windows"]) == 1 and 0 <= record["loader_wait_fraction"] < 1
    assert [len(r["loader_wait_s"]) for r in record["ranks"]] == [1, 1]


@pytest.mark.slow
def test_reading_in_the_steps_process_is_slower_and_loader_bound(tmp_path):
    # 1024x1024 noise decodes in tens of ms, about 0.15 s a batch of 4: a step of 0.3 s of sleep keeps 2
    # workers ahead even on a machine three times slower, while reading in the step waits a third of the time
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8) for _ in range(32)]
    write_dataset(tmp_path / "big", images, labels=[i % 4 for i in range(32)], num_classes=4)
    slow = "slow@0=0.3,slow@1=0.3"
    none = run_cell("--data-path", str(tmp_path / "big"), "--num-workers", "0", faults=slow)
    two = run_cell("--data-path", str(tmp_path / "big"), "--num-workers", "2", faults=slow)
    assert none["status"] == two["status"] == "ok"
    assert none["samples_per_s"] < two["samples_per_s"]
    assert none["loader_wait_fraction"] > 0.2 > two["loader_wait_fraction"]
    from bench.verdicts import loader_bound

    assert loader_bound(none) and not loader_bound(two)


@pytest.mark.slow
def test_a_nan_loss_is_recorded_reported_and_never_compared(made, tmp_path):
    record = run_cell("--data-path", str(made), faults="nan@1,slow@1=0.3")
    assert record["status"] == "ok" and record["nonfinite_losses"] == 3
    from bench.report.compare import compare_cell
    from bench.verdicts import legend_lines, nonfinite, outlier_ranks

    assert nonfinite(record) and NONFINITE in legend_lines([record])[0]
    assert outlier_ranks(record)[0].startswith("rank 1 forward time")
    assert compare_cell(record, dict(record, nonfinite_losses=0), 0.05, 0.01).verdict == "incomparable"


def test_a_search_on_bad_data_is_refused_before_its_first_probe(faces, tmp_path):
    (faces / "train.idx").unlink()
    search = ["search", "classes", "--backbone", "none", "--batch-size", "8", "--nproc", "2", "--device", "cpu"]
    results = tmp_path / "results"
    args = ["--max-memory-gib", "1", "--data", "records", "--data-path", str(faces), "--results", str(results)]
    line = one_line(invoke(*search, *args))
    assert "train.idx" in line and "data_path" in line
    assert not results.exists()
