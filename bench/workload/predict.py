"""The memory model's torch side: trace a cell's step and add what the trace cannot see.

`python -m bench.workload.predict` reads a JSON list of cell configs on stdin and prints a JSON
list of predictions; bench.memory.predict_cells runs it in subprocesses, so that the parent never
imports torch.
"""

from __future__ import annotations

import json
import sys
import warnings

from bench.config import Cell
from bench.memory import (
    CPU_FIRST_STEP_BYTES,
    CPU_ONLY,
    DDP_BUCKET_CAP_BYTES,
    DDP_BUCKETS,
    GPU_ONLY,
    GPU_RUNTIME,
    PARTS,
    Prediction,
)
from bench.workload.memtrace import trace


def predict(cell: Cell) -> Prediction:
    """Trace the cell's step in this process (which must have no process group) and model the rest."""
    traced = trace(cell)
    parts = dict(traced.parts)
    parts[DDP_BUCKETS] = traced.backbone_bytes + 2 * DDP_BUCKET_CAP_BYTES if cell.backbone != "none" else 0
    # on a GPU the tensors take what the caching allocator reserves for them, more than their peak
    allocator_bytes = traced.reserved_bytes - traced.peak_bytes if traced.reserved_bytes is not None else 0
    parts[GPU_ONLY] = GPU_RUNTIME.bytes_for(cell) + allocator_bytes
    parts[CPU_ONLY] = 0 if cell.on_gpu else CPU_FIRST_STEP_BYTES
    return Prediction(peak_bytes=sum(parts.values()), parts={name: parts[name] for name in PARTS})


def main() -> int:
    """Read a JSON list of cell configs on stdin; print a JSON list of predictions."""
    warnings.filterwarnings("ignore")
    cells = [Cell.from_dict(data) for data in json.loads(sys.stdin.read())]
    print(json.dumps([predict(cell).to_dict() for cell in cells]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
