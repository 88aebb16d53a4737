"""The time model's samples/sec beside each measured one, in the report of a run on a GPU of the catalogue.

The GPU is the one the results folder's machine description names (bench.mfu.gpu_spec), in its usual
8-GPU server (bench.gpus.usual_server): the machine's links are not recorded. A machine whose GPUs
the catalogue does not know, or a CPU machine, gets no column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.config import Cell
from bench.gpus import GpuSpec, Server, usual_server
from bench.metrics import FAIL, Entry
from bench.mfu import gpu_spec
from bench.time_model import predict_samples_per_s


@dataclass(frozen=True, kw_only=True)
class PredictedColumn:
    """Predicted samples/sec of each GPU cell on the machine's GPU; blank for a CPU cell."""

    gpu: GpuSpec
    server: Server

    @property
    def header(self) -> str:
        return f"Predicted ({self.gpu.name})"

    @property
    def note(self) -> str:
        return (
            f"{self.header} is pfcbench's time model (bench.time_model) for the cell on one {self.gpu.model} "
            f"per rank in {self.server.text or self.server.name} ({self.gpu.link.text()}), from its FLOPs, bytes "
            "and collectives, with constants fitted on insightface's published reports: a prediction, not a "
            "measurement."
        )

    def predicted(self, cell: Cell) -> float | None:
        if not cell.on_gpu:
            return None
        try:
            return predict_samples_per_s(cell, self.gpu, self.server)
        except (KeyError, ValueError, ZeroDivisionError):
            return None

    def entries(self, cells: Sequence[Cell], records: Sequence[dict | None]) -> dict[str, list[Entry]]:
        return {self.header: [Entry(self.predicted(cell), format="speed") for cell in cells]}


def predicted_columns(env: dict[str, Any] | None) -> tuple[PredictedColumn, ...]:
    """The predicted column for a machine whose GPUs are all one GPU of the catalogue; none otherwise."""
    names = {gpu.get("name") for gpu in (env or {}).get("gpus") or [] if isinstance(gpu, dict)}
    specs = {gpu_spec(name) for name in names if isinstance(name, str)}
    if len(names) != 1 or len(specs) != 1 or None in specs:
        return ()
    (spec,) = specs
    return (PredictedColumn(gpu=spec, server=usual_server(spec)),)


@dataclass(frozen=True, kw_only=True)
class PredictedMemoryColumn:
    """The memory model's peak GiB of each GPU cell's busiest rank on the GPU, Fail where it exceeds the card;
    blank for a CPU cell."""

    gpu: GpuSpec
    peak_gib: dict[Cell, float]
    """By cell: the predicted peak GiB (bench.memory.predict_cells)."""

    @classmethod
    def of(cls, gpu: GpuSpec, cells: Sequence[Cell]) -> PredictedMemoryColumn:
        """The column for cells, each traced once (or read from the trace cache)."""
        from bench.memory import predict_cells

        on_gpu = list(dict.fromkeys(cell for cell in cells if cell.on_gpu))
        return cls(gpu=gpu, peak_gib={c: p.peak_gib for c, p in zip(on_gpu, predict_cells(on_gpu), strict=True)})

    @property
    def header(self) -> str:
        return f"Predicted GiB ({self.gpu.name})"

    @property
    def note(self) -> str:
        return (
            f"{self.header} is pfcbench's memory model (bench.memory) for the busiest rank of the cell on one "
            f"{self.gpu.model} ({self.gpu.memory_gib:.1f} GiB): the cell's step traced without running it, and what "
            "only a GPU holds; Fail where it exceeds the card. A prediction, not a measurement."
        )

    def entry(self, cell: Cell) -> Entry:
        peak = self.peak_gib.get(cell)
        if peak is None:
            return Entry()
        return Entry(peak, marks=(FAIL,) if peak > self.gpu.memory_gib else (), format="float1")

    def entries(self, cells: Sequence[Cell], records: Sequence[dict | None]) -> dict[str, list[Entry]]:
        return {self.header: [self.entry(cell) for cell in cells]}
