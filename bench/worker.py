"""One rank of a benchmark cell: `torchrun ... -m bench.worker --cell cell.json --out DIR`.

Each rank writes DIR/rank-N.json: status ok, oom or error, where it happened and its figures.
A failing rank writes its file and leaves with a non-zero code at once, so that torchrun tears
the other ranks down instead of leaving them blocked in a collective.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
from torch import distributed

from bench.config import Cell
from bench.launch import die_with_parent
from bench.machine import GpuSampler, cpu_peak_rss_mib
from bench.measure import time_windows
from bench.results import write_atomic
from bench.workload.step import Step, build_step

ALLOCATION_FAILURES = (
    "DefaultCPUAllocator: can't allocate memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "Failed to CUDA calloc",
    "cudaErrorMemoryAllocation",
    "CUDA error: out of memory",
    "'out of memory'",  # NCCL: "ncclUnhandledCudaError: ... Cuda failure 2 'out of memory'"
)
"""Allocation failures that torch reports as plain RuntimeErrors; their text is all there is."""

BYTES_ASKED = re.compile(r"(?i)tried to allocate ([\d.]+) ?(bytes|KiB|MiB|GiB)")
UNITS = {"bytes": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30}
MIB = 2**20


def classify(exc: BaseException) -> str:
    """oom for a failed allocation anywhere (torch, cuBLAS, cuDNN, NCCL, the CPU allocator), else error."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return "oom"
    if isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in ALLOCATION_FAILURES):
        return "oom"
    return "error"


def bytes_asked(exc: BaseException) -> int | None:
    match = BYTES_ASKED.search(str(exc))
    return int(float(match.group(1)) * UNITS[match.group(2).lower()]) if match else None


def address_space_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def cap_memory(cell: Cell, device: torch.device) -> None:
    """Emulate a smaller memory: a CUDA memory fraction, or an address-space limit on the CPU.

    On the CPU the cap is what the rank may map beyond what it holds once torch and the process
    group are up, so that it means the same whatever the size of the libraries.
    """
    cap_bytes = int(cell.max_memory_gib * 2**30)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_bytes / total), device)
    else:
        limit = address_space_bytes() + cap_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {
            "peak_allocated_mib": torch.cuda.max_memory_allocated(device) / MIB,
            "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / MIB,
            "peak_rss_mib": cpu_peak_rss_mib(),
        }
    return {"peak_allocated_mib": None, "peak_reserved_mib": None, "peak_rss_mib": cpu_peak_rss_mib()}


def nvml_index(cuda_index: int) -> int:
    """NVML's number of a CUDA device, through CUDA_VISIBLE_DEVICES where it lists numbers."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    numbers = [v.strip() for v in visible.split(",") if v.strip()]
    if numbers and all(v.isdigit() for v in numbers):
        return int(numbers[cuda_index])
    return cuda_index


def set_up(cell: Cell, out: Path) -> tuple[Step, Callable[[], None]]:
    """Join the process group, apply the memory cap and build the step; returns it and a heartbeat."""
    heartbeat = out / "heartbeat"

    def beat() -> None:
        heartbeat.touch()

    beat()
    local_rank = int(os.environ["LOCAL_RANK"])
    if cell.device == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    distributed.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        device_id=device if device.type == "cuda" else None,
        timeout=timedelta(minutes=10),
    )
    beat()
    if cell.max_memory_gib is not None:
        cap_memory(cell, device)
    step = build_step(cell, device, distributed.get_rank())
    beat()
    return step, beat


def measure(cell: Cell, step: Step, beat: Callable[[], None]) -> dict:
    """Time the step and return this rank's figures: times, losses, memory, its GPU's telemetry."""
    device = step.device
    sampler = GpuSampler([nvml_index(device.index)] if device.type == "cuda" else [])
    figures = time_windows(
        step,
        device=device,
        warmup_steps=cell.warmup_steps,
        num_windows=cell.num_windows,
        steps_per_window=cell.steps_per_window,
        heartbeat=beat,
        measured=sampler,
    )
    return {**figures, **peak_memory(device), "gpus": sampler.summary()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One rank of a pfcbench cell (started by torchrun).")
    parser.add_argument("--cell", type=Path, required=True, help="cell config JSON")
    parser.add_argument("--out", type=Path, required=True, help="folder for rank-N.json and ranks.json")
    args = parser.parse_args(argv)
    die_with_parent(signal.SIGKILL)  # a rank never outlives its torchrun agent
    rank = int(os.environ["RANK"])
    cell = Cell.from_dict(json.loads(args.cell.read_text()))
    record: dict = {
        "rank": rank,
        "local_rank": int(os.environ["LOCAL_RANK"]),
        "world_size": int(os.environ["WORLD_SIZE"]),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": time.time(),
    }
    step = None
    try:
        step, beat = set_up(cell, args.out)
        record.update(measure(cell, step, beat), status="ok")
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded, then the rank leaves
        record.update(
            status=classify(exc),
            phase=step.phase if step else "setup",
            exception=type(exc).__name__,
            error=str(exc)[-2000:],
            traceback=traceback.format_exc()[-4000:],
            oom_bytes=bytes_asked(exc),
        )
    write_atomic(args.out / f"rank-{rank}.json", json.dumps(record))
    if record["status"] != "ok":
        print(f"rank {rank}: {record['status']} in {record['phase']}: {record['error'][-300:]}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)
    share_with_every_node(record, args.out)
    distributed.destroy_process_group()
    return 0


def share_with_every_node(record: dict, out: Path) -> None:
    """Gather every rank's figures; local rank 0 of each node writes them all to OUT/ranks.json.

    So the runner on any node, the one holding rank 0 included, sees the memory and NVML
    figures of all nodes without a shared filesystem.
    """
    everyone: list = [None] * record["world_size"]
    distributed.all_gather_object(everyone, record)
    if record["local_rank"] == 0:
        write_atomic(out / "ranks.json", json.dumps({"ranks": everyone}))


if __name__ == "__main__":
    sys.exit(main())
