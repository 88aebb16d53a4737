"""Classifiers alone at many batches and sample rates from a few traces: the sizes of their storages scaled.

A classifier's step at one GPU count makes the same storages in the same order at every batch a GPU and
sample size; only their sizes change, each a product of the batch (a GPU's, or gathered), the sample
and the embedding: bilinear in the batch a GPU and the sample. So a family of classifiers (the same
but for those two) is traced at the corners of its batches and samples, with the storage updates the
trace saw (bench.workload.events), and each member's updates are the corners' interpolated, then
replayed: its peak, parts and allocator reserve, without a trace of its own.

Where the corners' updates differ in more than size (another count of storages, a storage empty at one
corner), the family is traced member by member. Sample sizes are bilinear only where the sample holds
int(rate x shard) centres; below that the sample takes every class of the shard the batch holds, as many
as the labels say, so those members are traced too. The few storages whose size follows the labels
themselves (the positive classes, a few KiB) come out within a few KiB of their own trace.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np

from bench.config import Cell
from bench.memory import Tracer
from bench.workload.events import FREED, NUM_PARTS, TAKEN, TAKEN_BYTES, replay
from bench.workload.sizes import num_local_classes
from bench.workload.trace_cache import trace_fields

SIZE_COLUMNS = [*range(NUM_PARTS), TAKEN_BYTES]
"""The columns of an update row that are sizes; the others name blocks."""
CHECKED = ("peak_bytes", "parts", "reserved_bytes")
"""What a scaled trace must share with the trace of its own to the byte, at a family's middle."""


def num_sample(cell: Cell) -> int:
    """Centres rank 0's classifier samples where the sample holds int(rate x shard): its whole shard at rate 1."""
    num_local = num_local_classes(cell)
    return num_local if cell.sample_rate >= 1 else int(cell.sample_rate * num_local)


def scalable(cell: Cell) -> bool:
    """Whether the sample is int(rate x shard) whatever the labels: at least the global batch, which holds at
    most as many classes; the whole shard at rate 1."""
    return cell.sample_rate >= 1 or num_sample(cell) >= cell.batch_size


def family(cell: Cell) -> str:
    """What a classifier has in common with those it is scaled from: all but its batch and sample rate, and
    whether it samples at all."""
    fields = trace_fields(cell)
    del fields["batch_size"], fields["sample_rate"]
    return json.dumps([fields, cell.sample_rate >= 1], sort_keys=True)


def point(cell: Cell) -> tuple[int, int]:
    """Where a member sits in its family: its batch a GPU and its sample."""
    return cell.per_gpu_batch, num_sample(cell)


@dataclasses.dataclass(frozen=True)
class Corners:
    """A family's corners: its smallest and largest batch a GPU and sample, and a member at each; and the member
    nearest their middle, which checks the scaling."""

    batches: tuple[int, int]
    samples: tuple[int, int]
    cells: dict[tuple[int, int], Cell]
    middle: Cell

    @classmethod
    def of(cls, members: list[Cell]) -> Corners | None:
        """The corners where members span them all and leave at least two members more (None otherwise)."""
        at = {point(cell): cell for cell in members}
        batches = (min(b for b, _ in at), max(b for b, _ in at))
        samples = (min(s for _, s in at), max(s for _, s in at))
        corners = {(b, s): at.get((b, s)) for b, s in itertools.product(set(batches), set(samples))}
        if None in corners.values() or len(corners) + 2 > len(at):
            return None
        inside = [p for p in at if p not in corners]
        middle = min(
            inside, key=lambda p: abs(p[0] - sum(batches) / 2) / batches[1] + abs(p[1] - sum(samples) / 2) / samples[1]
        )
        return cls(batches, samples, corners, at[middle])

    def rows(self, traced: dict[Cell, dict]) -> dict[tuple[int, int], np.ndarray] | None:
        """The corners' update rows as arrays, where they differ in sizes only; None where they do not."""
        rows = {corner: np.array(traced[member]["events"], dtype=np.int64) for corner, member in self.cells.items()}
        first = next(iter(rows.values()))
        blocks = [FREED, TAKEN]
        if not all(r.shape == first.shape and (r[:, blocks] == first[:, blocks]).all() for r in rows.values()):
            return None
        return rows

    def scaled(self, rows: dict[tuple[int, int], np.ndarray], cell: Cell) -> list[list[int]]:
        """cell's update rows: the corners' sizes interpolated, bilinear in batch a GPU and sample."""
        batch, sample = point(cell)
        (b0, b1), (s0, s1) = self.batches, self.samples
        u = (batch - b0) / (b1 - b0) if b1 > b0 else 0.0
        v = (sample - s0) / (s1 - s0) if s1 > s0 else 0.0
        weights = [((b0, s0), (1 - u) * (1 - v)), ((b1, s0), u * (1 - v)), ((b0, s1), (1 - u) * v), ((b1, s1), u * v)]
        out = next(iter(rows.values())).copy()
        sizes = sum(weight * rows[corner][:, SIZE_COLUMNS] for corner, weight in weights if weight)
        out[:, SIZE_COLUMNS] = np.rint(sizes).astype(np.int64)
        return out.tolist()

    def trace_of(self, rows: dict[tuple[int, int], np.ndarray], traced: dict[Cell, dict], cell: Cell) -> dict:
        """cell's trace replayed from its scaled rows."""
        backbone_bytes = traced[self.middle]["backbone_bytes"]
        return replay(self.scaled(rows, cell), cell.on_gpu) | {"backbone_bytes": backbone_bytes, "events": None}

    def holds(self, rows: dict[tuple[int, int], np.ndarray], traced: dict[Cell, dict]) -> bool:
        """Whether the middle member's trace, scaled from the corners, is its own, to the byte."""
        scaled = self.trace_of(rows, traced, self.middle)
        return all(scaled[name] == traced[self.middle][name] for name in CHECKED)


def classifier_traces(cells: list[Cell], tracer: Tracer) -> list[dict]:
    """Each classifier alone's trace: scaled from its family's corners where the middle member shows the scaling
    holds, else its own."""
    families: dict[str, list[Cell]] = {}
    for cell in dict.fromkeys(cells):
        if scalable(cell):
            families.setdefault(family(cell), []).append(cell)
    corners = {key: Corners.of(members) for key, members in families.items()}
    corners = {key: found for key, found in corners.items() if found is not None}
    wanted = list(dict.fromkeys(c for found in corners.values() for c in [*found.cells.values(), found.middle]))
    traced = dict(zip(wanted, tracer.traces(wanted), strict=True))
    scaled: dict[Cell, dict] = {}
    for key, found in corners.items():
        rows = found.rows(traced)
        if rows is not None and found.holds(rows, traced):
            scaled |= {cell: found.trace_of(rows, traced, cell) for cell in families[key]}
    scaled |= traced
    own = list(dict.fromkeys(cell for cell in cells if cell not in scaled))
    scaled |= dict(zip(own, tracer.traces(own), strict=True))
    return [scaled[cell] for cell in cells]
