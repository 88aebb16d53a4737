"""How an out-of-memory reads: the texts that torch, cuBLAS, cuDNN, NCCL and the CPU allocator give.

torch raises most of these as plain RuntimeErrors, and an NCCL watchdog that aborts a rank leaves
only its log, so the text is all there is. This module imports nothing heavy: the runner scans
logs with it, the ranks classify exceptions with it.
"""

from __future__ import annotations

ALLOCATION_FAILURES = (
    "DefaultCPUAllocator: can't allocate memory",
    "CUDA out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    # cuBLAS cannot create its handle on a full card and says "not initialized".
    "CUBLAS_STATUS_NOT_INITIALIZED",
    "CUDNN_STATUS_ALLOC_FAILED",
    # cuDNN finds no engine or algorithm whose workspace fits in what is left.
    "unable to find an engine",
    "Unable to find a valid cuDNN algorithm",
    "Failed to CUDA calloc",
    "cudaErrorMemoryAllocation",
    "CUDA error: out of memory",
    "'out of memory'",  # NCCL: "ncclUnhandledCudaError: ... Cuda failure 2 'out of memory'"
)
"""Texts of failed allocations."""


def mentions_oom(text: str) -> bool:
    """Whether a message or log says that an allocation failed."""
    return any(marker in text for marker in ALLOCATION_FAILURES)


def oom_line(log: str) -> str | None:
    """The last line of a log that says an allocation failed, or None."""
    lines = [line.strip() for line in log.splitlines() if mentions_oom(line)]
    return lines[-1][-1000:] if lines else None
