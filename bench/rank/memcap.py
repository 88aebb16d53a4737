"""How a rank emulates a smaller memory, and tells a failed allocation from another failure.

On CUDA the caching allocator gets the share of the device that, with the memory outside it,
fills the cap; on the CPU the rank's address space is limited. Under such a cap some libraries
report a failed allocation in their own words, which failure_status reads as oom.
"""

from __future__ import annotations

import resource

import torch
from torch import distributed

from bench.config import Cell
from bench.rank.oom import mentions_oom
from bench.units import MIB

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


def address_space_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def cuda_overhead_bytes(device: torch.device) -> int:
    """Device memory in use outside torch's caching allocator once NCCL, cuBLAS and cuDNN are up.

    The CUDA context, the NCCL communicator's buffers and the cuBLAS/cuDNN handles are created on
    first use, so one small collective, matmul and convolution run first. Memory other processes
    hold on the device counts too: it is not there for this rank either.
    """
    x = torch.ones(8, 8, device=device)
    distributed.all_reduce(x)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        (x.to(dtype) @ x.to(dtype)).sum().item()
    torch.nn.functional.conv2d(torch.ones(1, 3, 8, 8, device=device), torch.ones(4, 3, 3, 3, device=device))
    torch.cuda.synchronize(device)
    free_bytes, total_bytes = torch.cuda.mem_get_info(device)
    return total_bytes - free_bytes - torch.cuda.memory_reserved(device)


def memory_fraction(cap_bytes: int, overhead_bytes: int, total_bytes: int) -> float:
    """The caching allocator's share of a device, so that it and the overhead together fill the cap."""
    if cap_bytes <= overhead_bytes:
        raise torch.cuda.OutOfMemoryError(
            f"CUDA out of memory: a cap of {cap_bytes / MIB:.0f} MiB leaves nothing beyond the "
            f"{overhead_bytes / MIB:.0f} MiB that the CUDA context, NCCL, cuBLAS and cuDNN hold"
        )
    return min(1.0, (cap_bytes - overhead_bytes) / total_bytes)


def cap_memory(cell: Cell, device: torch.device, overhead_bytes: int) -> None:
    """Emulate a smaller memory: a device of max_memory_gib in all on CUDA, an address-space limit on the CPU.

    On CUDA the cap is the device's whole memory, as a smaller card has it: the caching allocator
    gets what is left after the overhead outside it. On the CPU the cap is what the rank may map
    beyond what it holds once torch and the process group are up, so that it means the same
    whatever the size of the libraries.
    """
    cap_bytes = int(cell.max_memory_gib * 2**30)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(memory_fraction(cap_bytes, overhead_bytes, total), device)
    else:
        limit = address_space_bytes() + cap_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
