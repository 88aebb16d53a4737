"""The memory model: the predicted peak bytes of the busiest rank of a cell, split into parts.

The tensor bytes come from the cell's real step: bench.workload.memtrace builds it and runs two
steps on the CPU under FakeTensorMode as rank 0 of the cell's world (rank 0 holds the most
classes, and the class of arcface_torch's constant label). What the trace cannot see is modelled
here: DistributedDataParallel's gradient buckets, and on a GPU the memory that only a GPU run has
(CUDA context, cuDNN workspace, NCCL buffers, the caching allocator's rounding), whose constants
live in bench.gpus.GPU_RUNTIME to be calibrated on a real GPU.

This module does not import torch: `predict_cells` traces in subprocesses
(`python -m bench.workload.predict`, which holds `predict`), so that `pfcbench plan` stays light.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from bench.config import Cell
from bench.gpus import GPU_RUNTIME as GPU_RUNTIME  # re-exported: bench.workload.predict reads it here
from bench.units import GIB, MIB

BACKBONE_STATE = "backbone weights, gradients, optimizer"
ACTIVATIONS = "activations"
CLASSIFIER_STATE = "classifier centres, gradient, momentum"
CLASSIFIER_TEMPORARIES = "classifier temporaries"
DDP_BUCKETS = "DDP gradient buckets"
GPU_ONLY = "GPU runtime (context, cuDNN, NCCL, allocator)"
CPU_ONLY = "CPU runtime (modules and threads of the first step)"
PARTS = (BACKBONE_STATE, ACTIVATIONS, CLASSIFIER_STATE, CLASSIFIER_TEMPORARIES, DDP_BUCKETS, GPU_ONLY, CPU_ONLY)
"""The parts of a prediction, in the order they are shown."""

CPU_FIRST_STEP_BYTES = 16 * MIB
"""Address space a capped CPU rank maps beyond its tensors (the modules and threads of the first
step, malloc's small-block heap). Measured as the smallest cap under which a cell runs, less its
traced tensors: 4 MiB for a classifier-only cell of 1,000 classes, 22 MiB at 300,000 classes, 19 MiB
for an mbf cell."""

PREDICT_MODULE = "bench.workload.predict"
"""The torch-side entry point that traces cells: JSON cell configs on stdin, predictions on stdout."""

DDP_BUCKET_CAP_BYTES = 16 * MIB
"""bucket_cap_mb of the step's DDP: one bucket's fp16 copy and result under the compression hook."""


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """Predicted peak memory of the busiest rank (rank 0) of a cell."""

    peak_bytes: int
    """Everything: the traced tensors at their peak, DDP's buckets and the GPU-only runtime."""
    parts: dict[str, int] = field(default_factory=dict)
    """Bytes per part (PARTS); they sum to peak_bytes."""

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    def fits(self, memory_gib: float | None) -> bool | None:
        """Whether the peak fits in memory_gib per rank; None without a memory size."""
        return None if memory_gib is None else self.peak_bytes <= memory_gib * GIB

    def largest_part(self) -> str:
        return max(self.parts, key=self.parts.get)

    def to_dict(self) -> dict:
        return {"peak_bytes": self.peak_bytes, "parts": self.parts}

    @classmethod
    def from_dict(cls, data: dict) -> Prediction:
        return cls(peak_bytes=data["peak_bytes"], parts=data["parts"])


def predict_cells(cells: list[Cell], num_workers: int = 2, timeout_s: float = 600.0) -> list[Prediction]:
    """Predict many cells in up to num_workers subprocesses (torch is imported there, not here).

    Raises RuntimeError with the tracer's last error line when a subprocess fails.
    """
    shares = [cells[i::num_workers] for i in range(num_workers) if cells[i::num_workers]]
    procs = []
    try:
        for share in shares:
            with tempfile.TemporaryFile("w+") as cells_file:
                json.dump([cell.to_dict() for cell in share], cells_file)
                cells_file.seek(0)
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", PREDICT_MODULE],
                        stdin=cells_file,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                )
        results = [read_predictions(proc, timeout_s) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    predictions: list[Prediction | None] = [None] * len(cells)
    for worker, share_predictions in enumerate(results):
        predictions[worker :: len(shares)] = share_predictions
    return predictions


def read_predictions(proc: subprocess.Popen, timeout_s: float) -> list[Prediction]:
    stdout, stderr = proc.communicate(timeout=timeout_s)
    if proc.returncode != 0:
        last = stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise RuntimeError(f"memory prediction failed: {last[0]}")
    return [Prediction.from_dict(item) for item in json.loads(stdout)]


def memory_size_gib(cell: Cell, memory_gib: float | None, gpu_memory_gib: float | None) -> float | None:
    """The memory a cell's rank has: the one asked for, else the cell's cap, else the local GPU's (CUDA cells)."""
    if memory_gib is not None:
        return memory_gib
    if cell.max_memory_gib is not None:
        return cell.max_memory_gib
    return gpu_memory_gib if cell.on_gpu else None


def verdict(prediction: Prediction, memory_gib: float | None) -> str:
    """One line: the predicted peak, against the memory size, and the part that weighs most."""
    text = f"predicted peak {prediction.peak_gib:.2f} GiB per rank"
    if memory_gib is not None:
        text += f" {'<=' if prediction.fits(memory_gib) else '>'} {round(memory_gib, 2):g} GiB"
    part = prediction.largest_part()
    return f"{text} (largest part: {part}, {prediction.parts[part] / GIB:.2f} GiB)"
