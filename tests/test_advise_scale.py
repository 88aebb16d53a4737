"""A classifier alone, scaled from its family's traces: what it adds up to is its own trace, to the byte, and
the trace subprocesses stay up from one call to the next."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest

from bench.advise.compose import classifier_cell
from bench.advise.scale import classifier_traces
from bench.config import Cell
from bench.memory import TraceProgress, Tracer
from bench.workload.events import replay
from bench.workload.trace_cache import TraceCache

# WebFace42M's classes over 4 and 2 GPUs, arcface_torch's classifier, batch 32-512 a GPU, Partial FC 0.5-0.1
FAMILY = [
    classifier_cell(
        Cell(backbone="r50", classes=2_059_906, batch_size=batch * gpus, nproc_per_node=gpus, sample_rate=rate)
    )
    for gpus in (4, 2)
    for rate in (0.5, 0.2, 0.1)
    for batch in (32, 64, 128, 256, 512)
]


class Counted(Tracer):
    """A tracer that keeps the cells it was asked to trace."""

    def __init__(self, cache: TraceCache) -> None:
        super().__init__(cache=cache, progress=TraceProgress(None))
        self.asked: list[Cell] = []

    def traces(self, cells: list[Cell]) -> list[dict]:
        self.asked += cells
        return super().traces(cells)


@pytest.mark.slow  # about 40 classifier traces
def test_scaled_classifiers_are_their_own_traces_from_fewer_traces(tmp_path):
    with contextlib.closing(Counted(TraceCache(tmp_path))) as tracer:
        scaled = classifier_traces(FAMILY, tracer)
        asked = set(tracer.asked)
        own = tracer.traces(FAMILY)
    for cell, mine, theirs in zip(FAMILY, scaled, own, strict=True):
        for name in ("peak_bytes", "parts", "reserved_bytes", "backbone_bytes"):
            assert mine[name] == theirs[name], (cell.world_size, cell.per_gpu_batch, cell.sample_rate, name)
    # 4 GPUs: 4 corners and a middle for 15; 2 GPUs: the middle shows the labels' share of the shard does not
    # scale (a binomial draw), and each is traced
    assert len([c for c in asked if c.world_size == 4]) == 5
    assert {c for c in FAMILY if c.world_size == 2} <= asked


@pytest.mark.slow  # two classifier traces
def test_a_trace_replayed_from_its_updates_is_the_trace(tmp_path):
    cuda, cpu = FAMILY[7], dataclasses.replace(FAMILY[7], device="cpu")
    with contextlib.closing(Tracer(cache=TraceCache(tmp_path), progress=TraceProgress(None))) as tracer:
        traces = tracer.traces([cuda, cpu])
    for cell, trace in zip([cuda, cpu], traces, strict=True):
        replayed = replay(trace["events"], cell.on_gpu)
        assert replayed == {name: trace[name] for name in ("peak_bytes", "parts", "reserved_bytes")}
    assert traces[0]["reserved_bytes"] > traces[0]["peak_bytes"] and traces[1]["reserved_bytes"] is None


@pytest.mark.slow  # two classifier traces
def test_the_trace_subprocesses_stay_up_between_calls_until_closed(tmp_path):
    tracer = Tracer(num_workers=1, cache=TraceCache(tmp_path), progress=TraceProgress(None))
    try:
        tracer.traces(FAMILY[:1])
        (worker,) = tracer.workers
        tracer.traces(FAMILY[1:2])
        assert tracer.workers == [worker] and worker.proc.poll() is None
    finally:
        tracer.close()
    assert tracer.workers == [] and worker.proc.poll() is not None
