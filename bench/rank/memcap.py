"""How a rank tells a failed allocation from another failure, under a memory cap too.

Under a cap (bench.workload.device's cap_memory) some libraries report a failed allocation in
their own words, which failure_status reads as oom.
"""

from __future__ import annotations

import resource

import torch

from bench.rank.oom import mentions_oom

ONEDNN_FAILURE = "could not create a primitive"
"""oneDNN's error for a CPU convolution it cannot set up, which under an address-space cap is a
failed allocation (it gives the same text for other causes, so without a cap it stays an error)."""


def failure_status(exc: BaseException) -> str:
    """oom for a failed allocation anywhere (torch, cuBLAS, cuDNN, NCCL, the CPU allocator), else error."""
    # torch.cuda.OutOfMemoryError is torch.OutOfMemoryError from torch 2.5 on, and exists before it.
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return "oom"
    if isinstance(exc, RuntimeError) and mentions_oom(str(exc)):
        return "oom"
    capped = resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY
    if isinstance(exc, RuntimeError) and capped and ONEDNN_FAILURE in str(exc):
        return "oom"
    return "error"
