"""What a CUDA run depends on, checked on the CPU: refusals before anything runs, the ranks'
environment, Slurm's request, the memory cap's arithmetic, out-of-memory read from a log, and
the fp16 and bf16 step's gradient handling."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from bench.config import Cell
from bench.launch.local import torchrun_argv, worker_env
from bench.launch.slurm import SlurmOptions, sbatch_argv
from bench.launch.watchdog import Limits
from bench.rank.memcap import failure_status as classify_exception
from bench.store.records import cell_status
from bench.workload.device import memory_fraction
from tests.cli import pfcbench
from tests.ranks import run_ranks

GIB = 2**30


@pytest.mark.slow
@pytest.mark.parametrize("nproc", ["1", "2"])
def test_a_cuda_matrix_that_needs_more_gpus_than_visible_is_refused_before_anything_runs(nproc, tmp_path):
    done = pfcbench("run", "matrices/rtx3080.toml", "--nproc", nproc, "--results", str(tmp_path))
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("Error: matrices/rtx3080.toml: 13 CUDA cell(s) need")
    assert f"need {nproc} GPUs per node but 0 are visible here" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_cuda_cell_that_needs_more_gpus_than_visible_is_refused(tmp_path):
    done = pfcbench("cell", "--device", "cuda", "--nproc", "2", "--batch-size", "8", "--workdir", str(tmp_path / "w"))
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "1 CUDA cell(s) need 2 GPUs per node but 0 are visible here" in line
    assert not (tmp_path / "w").exists()


def test_zero_warmup_steps_on_cuda_is_refused_and_allowed_on_the_cpu(tmp_path):
    with pytest.raises(ValueError, match="warmup_steps must be at least 1 on cuda"):
        Cell(device="cuda", warmup_steps=0)
    assert Cell(device="cpu", warmup_steps=0).warmup_steps == 0
    done = pfcbench("plan", "matrices/smoke.toml", "--set", "device=cuda", "--set", "warmup_steps=0",
                    "--results", str(tmp_path))  # fmt: skip
    assert done.returncode == 2
    assert "warmup_steps must be at least 1 on cuda" in done.stderr


def test_the_ranks_environment():
    limits = Limits(inactivity_timeout_s=300)
    cpu = worker_env(Cell(device="cpu", nproc_per_node=2))
    cuda = worker_env(Cell(device="cuda", nproc_per_node=2))
    assert cpu["MALLOC_ARENA_MAX"] == "2"
    assert cuda.get("MALLOC_ARENA_MAX") == os.environ.get("MALLOC_ARENA_MAX")
    argv = torchrun_argv(Cell(device="cuda", nproc_per_node=2), limits, Path("cell.json"), Path("out"))
    assert float(argv[argv.index("--pg-timeout-s") + 1]) > limits.inactivity_timeout_s


def test_slurm_cuda_jobs_ask_for_cpus_per_gpu(tmp_path):
    cell = Cell(device="cuda", nproc_per_node=8, batch_size=64)
    assert "--cpus-per-task=32" in sbatch_argv(cell, tmp_path, SlurmOptions())
    argv = sbatch_argv(cell, tmp_path, SlurmOptions(cpus_per_gpu=6))
    assert "--cpus-per-task=48" in argv and "--gpus-per-node=8" in argv
    with pytest.raises(ValueError, match="cpus-per-gpu"):
        SlurmOptions(cpus_per_gpu=0)


def test_the_memory_cap_is_the_whole_device():
    # a 10 GiB card on a 140 GiB one, with 1 GiB held by the context, NCCL and the library handles
    assert memory_fraction(10 * GIB, 1 * GIB, 140 * GIB) == pytest.approx(9 / 140)
    assert memory_fraction(200 * GIB, 1 * GIB, 140 * GIB) == 1.0
    with pytest.raises(torch.cuda.OutOfMemoryError) as caught:
        memory_fraction(GIB // 2, GIB, 140 * GIB)
    assert classify_exception(caught.value) == "oom"


NCCL_ABORT_LOG = """\
[rank1]:[E ProcessGroupNCCL.cpp:1590] [PG ID 0 PG GUID 0(default_pg) Rank 1] Process group watchdog thread terminated with exception: CUDA error: out of memory
terminate called after throwing an instance of 'c10::DistBackendError'
W torch/distributed/elastic/multiprocessing/api.py:897] Sending process 2 closing signal SIGTERM
E torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: -6) local_rank: 1 (pid: 3) of binary: python
"""


def test_an_nccl_watchdog_abort_that_leaves_no_rank_file_is_read_from_the_log():
    assert cell_status([], 2, 1, None, NCCL_ABORT_LOG) == "oom"
    assert cell_status([], 2, None, "no progress for 120 s", NCCL_ABORT_LOG) == "oom"
    assert cell_status([], 2, 1, None, NCCL_ABORT_LOG.replace("out of memory", "unspecified launch failure")) == "error"
    assert cell_status([], 2, None, "no progress for 120 s", "") == "timeout"


@pytest.mark.slow
def test_fp16_records_gradscalers_scale_and_skipped_steps():
    done = pfcbench("cell", "--backbone", "none", "--classes", "1000", "--batch-size", "4", "--nproc", "2",
                    "--device", "cpu", "--precision", "fp16", "--warmup-steps", "1", "--num-windows", "1",
                    "--steps-per-window", "3", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    for rank in record["ranks"]:
        # GradScaler starts at 2**16 and halves on each skipped step (growth needs 100 clean steps)
        skipped = rank["skipped_steps"] + rank["warmup_skipped_steps"]
        assert rank["grad_scale"] == 2.0**16 / 2**skipped
    assert record["grad_scale"] == record["ranks"][0]["grad_scale"]
    assert record["skipped_steps_max"] == max(r["skipped_steps"] for r in record["ranks"])


def hook_of_each_precision(rank: int, world_size: int, found: dict) -> None:
    from bench.workload.step import TrainStep

    for precision in ("fp16", "bf16"):
        cell = Cell(backbone="mbf", classes=100, batch_size=4, nproc_per_node=2, device="cpu", precision=precision)
        step = TrainStep(cell, torch.device("cpu"), rank)
        found[(rank, precision)] = step.backbone._get_ddp_logging_data().get("comm_hook")


@pytest.mark.slow
def test_bf16_cells_compress_gradients_to_bf16():
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        found = manager.dict()
        run_ranks(hook_of_each_precision, 2, found)
        assert {precision: hook for (_, precision), hook in found.items()} == {
            "fp16": "fp16_compress_hook",
            "bf16": "bf16_compress_hook",
        }
