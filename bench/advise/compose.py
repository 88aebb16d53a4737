"""The memory of many configurations from few traces: a backbone's part traced once per precision at two
batch sizes, the classifier's part traced alone per configuration.

A step's peak comes while the classifier runs, every activation of the backbone's forward alive.
Then the traced parts of a configuration add up from two traces, to the byte where the trace shows
it does (tests/test_advise.py):

- the backbone's state and activations: a reference trace of the same backbone, precision and impl
  with a large classifier on one GPU, less that classifier alone's trace; the references are affine
  in the batch a GPU (so much per sample and a constant), so two batches give every other; bf16 takes
  fp16's references: its tensors are fp16's, less the loss scaler's few bytes;
- the classifier's state and temporaries, and the embeddings it takes: the configuration's
  classifier alone (backbone "none": its classes, GPUs, batch and sample rate, in the precision its
  GEMMs run in, bench.time_model.classifier_precision), traced or scaled from its family's traces
  (bench.advise.scale).

What PyTorch's caching allocator reserves beyond the tensors depends on the order of every
allocation of the step and does not add up: it is estimated as the reference's reserve beyond its
classifier's plus the configuration's classifier's own. So a composed prediction comes in two:
`lower`, nothing reserved beyond the tensors, never above the full trace's prediction (what does
not fit there never fits); and `estimate`, from 17% below to 4% above the full trace's over 540
configurations (benchmarks/advise_estimates.md), which the search ranks by and confirms by tracing in
full where it is near the card.
"""

from __future__ import annotations

import dataclasses

from bench.advise.scale import classifier_traces
from bench.config import Cell
from bench.memory import ACTIVATIONS, Prediction, Tracer, prediction_of
from bench.time_model import classifier_precision
from bench.workload.trace_cache import trace_key

REFERENCE_BATCHES = (64, 128)
"""Batches a GPU of the reference traces of a backbone and precision."""
REFERENCE_CLASSES = 1_000_000
"""Classes of the reference traces, on one GPU: a classifier whose step peaks while it runs."""
SLACK_BYTES = 16 * 2**20
"""Taken off the lower prediction: what the affine activations may be off by (a few KiB where traced)."""


def reference_cell(cell: Cell, batch: int) -> Cell:
    """The cell's backbone, precision (fp16 for bf16) and impl on one GPU at batch, with the reference classifier."""
    return dataclasses.replace(
        cell,
        classes=REFERENCE_CLASSES,
        batch_size=batch,
        nnodes=1,
        nproc_per_node=1,
        sample_rate=1.0,
        emulated=False,
        precision="fp16" if cell.precision == "bf16" else cell.precision,
    )


def classifier_cell(cell: Cell) -> Cell:
    """The cell's classifier alone: no backbone, in the precision its GEMMs run in."""
    return dataclasses.replace(cell, backbone="none", precision=classifier_precision(cell), tf32=False)


def backbone_key(cell: Cell) -> str:
    """What a backbone's part depends on: the trace key of the cell's first reference, whose classifier, GPUs
    and batch are the reference's whatever the cell's."""
    return trace_key(reference_cell(cell, REFERENCE_BATCHES[0]))


def reserve_of(trace: dict) -> int:
    """What a trace's caching allocator reserved beyond its tensors at most (0 on the CPU)."""
    return 0 if trace["reserved_bytes"] is None else trace["reserved_bytes"] - trace["peak_bytes"]


@dataclasses.dataclass(frozen=True)
class BackbonePart:
    """What a backbone adds to the step while the classifier runs, at the two reference batches: bytes by
    part and the allocator's reserve; and the bytes of its trained parameters."""

    parts: tuple[dict[str, int], dict[str, int]]
    reserves: tuple[int, int]
    backbone_bytes: int

    def at(self, batch: int) -> tuple[dict[str, int], int]:
        """The parts and reserve at batch, each affine between the two references."""
        low, high = REFERENCE_BATCHES
        share = (batch - low) / (high - low)
        small, large = self.parts
        parts = {part: round(small[part] + (large[part] - small[part]) * share) for part in small}
        return parts, max(0, round(self.reserves[0] + (self.reserves[1] - self.reserves[0]) * share))


def backbone_part(references: list[dict], alone: list[dict]) -> BackbonePart:
    """A backbone's part from its reference traces, less the traces of their classifiers alone."""
    pairs = list(zip(references, alone, strict=True))
    return BackbonePart(
        parts=tuple(
            {part: full["parts"][part] - only["parts"][part] for part in full["parts"]} for full, only in pairs
        ),
        reserves=tuple(reserve_of(full) - reserve_of(only) for full, only in pairs),
        backbone_bytes=references[0]["backbone_bytes"],
    )


@dataclasses.dataclass(frozen=True)
class Composed:
    """A configuration's memory from composed traces: a lower bound of the full trace's, and an estimate."""

    lower: Prediction
    estimate: Prediction


def composed(cell: Cell, backbone: BackbonePart, classifier: dict) -> Composed:
    """The cell's memory as its backbone's part and its classifier's trace."""
    side, reserve = backbone.at(cell.per_gpu_batch)
    parts = {part: side[part] + classifier["parts"][part] for part in side}
    on_gpu = classifier["reserved_bytes"] is not None

    def prediction(tensors: dict[str, int], reserve: int) -> Prediction:
        peak = sum(tensors.values())
        trace = {"peak_bytes": peak, "parts": tensors, "backbone_bytes": backbone.backbone_bytes}
        return prediction_of(cell, trace | {"reserved_bytes": peak + reserve if on_gpu else None})

    lower = parts | {ACTIVATIONS: parts[ACTIVATIONS] - SLACK_BYTES}
    return Composed(lower=prediction(lower, 0), estimate=prediction(parts, reserve + reserve_of(classifier)))


def compose_cells(cells: list[Cell], tracer: Tracer) -> list[Composed]:
    """Each cell's composed memory, from its backbone's reference traces and its classifier's own trace (scaled
    from its family's, bench.advise.scale)."""
    keys = list(dict.fromkeys(backbone_key(cell) for cell in cells))
    sample = {backbone_key(cell): cell for cell in cells}
    references = [reference_cell(sample[key], batch) for key in keys for batch in REFERENCE_BATCHES]
    traces = tracer.traces(references + [classifier_cell(cell) for cell in references])
    full, alone = traces[: len(references)], traces[len(references) :]
    own = classifier_traces([classifier_cell(cell) for cell in cells], tracer)
    width = len(REFERENCE_BATCHES)
    parts = {
        key: backbone_part(full[i * width : (i + 1) * width], alone[i * width : (i + 1) * width])
        for i, key in enumerate(keys)
    }
    return [composed(cell, parts[backbone_key(cell)], trace) for cell, trace in zip(cells, own, strict=True)]
