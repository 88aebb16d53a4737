"""The memory model's torch side: trace cells' steps, one after another, in a worker process.

`python -m bench.workload.predict` reads one JSON cell config a line on stdin and answers each with
one JSON line on stdout, the cell's trace (bench.workload.memtrace.Trace as a dict), as soon as it
is traced; bench.memory.predict_cells runs it in subprocesses and adds what the trace cannot see,
so that the parent never imports torch.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
import warnings

from bench.config import Cell
from bench.memory import Prediction, prediction_of
from bench.workload.memtrace import trace


def predict(cell: Cell) -> Prediction:
    """Trace the cell's step in this process (which must have no process group) and model the rest."""
    return prediction_of(cell, dataclasses.asdict(trace(cell)))


def main() -> int:
    """Answer each JSON cell config on stdin with its trace, one JSON line each."""
    warnings.filterwarnings("ignore")
    # What is imported by now, and what a trace leaves alive (torch's caches), is never garbage: the
    # trace's collections after each step skip it.
    gc.freeze()
    for line in sys.stdin:
        if line.strip():
            cell = Cell.from_dict(json.loads(line))
            print(json.dumps(dataclasses.asdict(trace(cell))), flush=True)
            gc.collect()
            gc.freeze()
    return 0


if __name__ == "__main__":
    sys.exit(main())
