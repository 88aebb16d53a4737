"""How a rank tells an out-of-memory from any other failure."""

from __future__ import annotations

import pytest
import torch

from bench.worker import bytes_asked, classify


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
def test_classify(exc, status):
    assert classify(exc) == status


def test_bytes_asked_reads_torch_messages():
    assert bytes_asked(torch.OutOfMemoryError("Tried to allocate 20.00 MiB (GPU 0)")) == 20 * 2**20
    assert bytes_asked(RuntimeError("you tried to allocate 2147483648 bytes. Error code 12")) == 2**31
    assert bytes_asked(RuntimeError("no size here")) is None
