"""The GPU check (benchmarks/gpu_check.sh): its set-up with nothing to download, its batches, its verdict."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from bench.config import IMPLS, Cell
from bench.matrix import load_matrix
from bench.store.records import build_record
from bench.store.results import append_record

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


@pytest.fixture
def python_without_pfcbench(tmp_path: Path) -> Path:
    """A venv that sees this interpreter's packages (torch, click, ...) but not pfcbench, whose
    editable install only a .pth file of site-packages announces: the venv adds site-packages as a
    plain path, so that .pth is never read."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "system-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def clean_env() -> dict[str, str]:
    """No PYTHONPATH, and a package index that cannot be reached."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | {"PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.slow
def test_set_up_starts_pfcbench_from_the_source_tree_with_nothing_to_download(python_without_pfcbench, tmp_path):
    env = clean_env()
    before = subprocess.run(
        [python_without_pfcbench, "-c", "import torch, click, pandas, pynvml; import bench"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert "No module named 'bench'" in before.stderr

    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out)],
        capture_output=True, text=True, env=env | {"PYTHON": str(python_without_pfcbench)}, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"pfcbench, version 0.1.0 from {REPO}" in done.stdout
    assert "| CPU " in (out / "env.md").read_text()  # `pfcbench env` ran
    assert done.stdout.splitlines()[-1] == "gpu_check: no CUDA device visible"
    assert "Traceback" not in done.stdout + done.stderr
    assert (out / "check.log").read_text() == done.stdout


@pytest.mark.parametrize("num_gpus", range(1, 9))
def test_batches_split_over_any_number_of_gpus(num_gpus, tmp_path):
    path = tmp_path / "gpu-check.toml"
    path.write_text(gpu_check.matrix_text(num_gpus))
    cells = load_matrix(path).cells()  # validates every batch against its ranks

    emulated = [cell for cell in cells if cell.emulated]
    assert all(cell.nproc_per_node == num_gpus and cell.device == "cuda" for cell in cells if not cell.emulated)
    assert {cell.per_gpu_batch for cell in cells if not cell.emulated} == {64, 128, 512}
    # one RTX 3080 of eight, on one GPU whatever this machine has
    assert {(cell.impl, cell.launched_ranks, cell.world_size) for cell in emulated} == {(i, 1, 8) for i in IMPLS}
    assert {(cell.impl, cell.precision) for cell in cells} >= {(impl, p) for impl in IMPLS for p in ("fp16", "bf16")}
    assert any(cell.backbone == "r50" for cell in cells)
    expected = gpu_check.expectations(path, num_gpus)
    assert len(expected) == len(cells)
    oom_ids = [cell_id for cell_id, status in expected.items() if status == "oom"]
    assert len(oom_ids) == 2 and all(next(c for c in cells if c.cell_id == i).max_memory_gib for i in oom_ids)


def record(cell: Cell, status: str, started: float) -> dict:
    """A record as the runner writes it: an ok one with the figures of two ranks, or a failed one."""
    if status != "ok":
        return build_record(cell, [], status, error="CUDA out of memory", started=started, duration_s=1.0)
    rank = {"host": "h", "status": "ok", "window_times_s": [1.0, 1.0], "step_times_s": [0.1], "losses": [30.0]}
    ranks = [dict(rank, rank=r) for r in range(cell.world_size)]
    return build_record(cell, ranks, "ok", error=None, started=started, duration_s=1.0)


def test_the_verdict_judges_this_runs_records_by_cell_id(tmp_path):
    path = tmp_path / "gpu-check.toml"
    path.write_text(gpu_check.matrix_text(2))
    cells = {cell.cell_id: cell for cell in load_matrix(path).cells()}
    expected = gpu_check.expectations(path, 2)
    results = tmp_path / "results" / "gpu-check" / "results.jsonl"
    earlier = time.time() - 3600
    for cell_id, status in expected.items():  # an older run that went wrong everywhere
        append_record(results, record(cells[cell_id], "error" if status == "ok" else "ok", earlier))
    since = time.time()
    stranger = Cell(device="cuda", classes=7, batch_size=2, nproc_per_node=2)
    append_record(results, record(stranger, "error", since))
    for cell_id in reversed(list(expected)):  # this run, in another order
        append_record(results, record(cells[cell_id], expected[cell_id], since))

    passed, lines = gpu_check.judge(tmp_path, expected, since)
    assert passed, lines
    assert lines[0] == f"GPU check passed: {len(expected)} of {len(expected)} cells as expected"
    assert all(" PASS " in line for line in lines[1:])

    passed, lines = gpu_check.judge(tmp_path, expected, time.time() + 1)  # a rerun that wrote nothing yet
    assert not passed
    assert lines[0] == (
        f"GPU check FAILED: 0 of {len(expected)} cells as expected; "
        f"{len(expected)} cell(s) have no record from this run (see check.log)"
    )
