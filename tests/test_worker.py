"""A rank: how it tells an out-of-memory from any other failure, and how often it beats its heartbeat."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from bench.rank.memcap import failure_status
from bench.rank.worker import Heartbeat, bytes_asked


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"), "oom"),
        (MemoryError(), "oom"),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: ..."), "oom"),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), "oom"),
        (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), "oom"),
        (
            torch.distributed.DistBackendError(
                "NCCL error: unhandled cuda error, ncclUnhandledCudaError: Call to CUDA function failed.\n"
                "Last error:\nCuda failure 2 'out of memory'"
            ),
            "oom",
        ),
        (RuntimeError("CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"), "oom"),
        (
            RuntimeError(
                "cuDNN Frontend error: [cudnn_frontend] Error: No execution plans support the graph. unable to find an engine"
            ),
            "oom",
        ),
        (RuntimeError("Unable to find a valid cuDNN algorithm to run convolution"), "oom"),
        (RuntimeError("Expected all tensors to be on the same device"), "error"),
        (ValueError("out of memory"), "error"),
        (KeyboardInterrupt(), "error"),
    ],
)
def test_failure_status(exc, status):
    assert failure_status(exc) == status


def test_bytes_asked_reads_torch_messages():
    assert bytes_asked(torch.OutOfMemoryError("Tried to allocate 20.00 MiB (GPU 0)")) == 20 * 2**20
    assert bytes_asked(RuntimeError("you tried to allocate 2147483648 bytes. Error code 12")) == 2**31
    assert bytes_asked(RuntimeError("no size here")) is None


def test_heartbeat_touches_its_file_at_most_once_per_interval(tmp_path):
    path = tmp_path / "heartbeat"
    beat = Heartbeat(path, interval_s=0.5)
    beat()
    assert path.exists()
    path.unlink()
    for _ in range(1000):
        beat()
    assert not path.exists(), "a burst of steps touched the heartbeat again within the interval"
    time.sleep(0.6)
    beat()
    assert path.exists()
    path.unlink()
    beat.now()
    assert path.exists(), "a set-up stage beats whatever the interval"


@pytest.mark.slow
def test_a_onednn_failure_is_an_out_of_memory_only_under_a_cpu_cap():
    code = (
        "import resource, sys; from bench.rank.memcap import failure_status;"
        "exc = RuntimeError('could not create a primitive');"
        "sys.stdout.write(failure_status(exc) + ' ');"
        "resource.setrlimit(resource.RLIMIT_AS, (2**40, 2**40));"
        "sys.stdout.write(failure_status(exc))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout == "error oom", done.stderr
