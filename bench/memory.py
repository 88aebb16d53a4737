"""The memory model: the predicted peak bytes of the busiest rank of a cell, split into parts.

The tensor bytes come from the cell's real step: bench.workload.memtrace builds it and runs two
steps on the CPU under FakeTensorMode as rank 0 of the cell's world (rank 0 holds the most
classes, and the class of arcface_torch's constant label). What the trace cannot see is modelled
here: DistributedDataParallel's gradient buckets, and on a GPU the memory that only a GPU run has
(CUDA context, cuDNN workspace, NCCL buffers, the caching allocator's rounding), whose constants
live in bench.gpus.GPU_RUNTIME to be calibrated on a real GPU.

This module does not import torch: `predict_cells` traces in subprocesses
(`python -m bench.workload.predict`, which holds `predict`), so that `pfcbench plan` stays light,
and keeps the traces on disk (bench.workload.trace_cache), so that a plan made again traces nothing.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from bench.config import Cell
from bench.gpus import GPU_RUNTIME as GPU_RUNTIME  # re-exported: bench.workload.predict reads it here
from bench.rank.host import usable_cpus
from bench.units import GIB, MIB
from bench.workload.trace_cache import TraceCache, trace_key

BACKBONE_STATE = "backbone weights, gradients, optimizer"
ACTIVATIONS = "activations"
CLASSIFIER_STATE = "classifier centres, gradient, momentum"
CLASSIFIER_TEMPORARIES = "classifier temporaries"
DDP_BUCKETS = "DDP gradient buckets"
GPU_ONLY = "GPU runtime (context, cuDNN, NCCL, allocator)"
CPU_ONLY = "CPU runtime (modules and threads of the first step)"
PARTS = (BACKBONE_STATE, ACTIVATIONS, CLASSIFIER_STATE, CLASSIFIER_TEMPORARIES, DDP_BUCKETS, GPU_ONLY, CPU_ONLY)
"""The parts of a prediction, in the order they are shown."""
TRACED_PARTS = (BACKBONE_STATE, ACTIVATIONS, CLASSIFIER_STATE, CLASSIFIER_TEMPORARIES)
"""The parts the trace sees; the others are modelled beside it."""

CPU_FIRST_STEP_BYTES = 16 * MIB
"""Address space a capped CPU rank maps beyond its tensors (the modules and threads of the first
step, malloc's small-block heap). Measured as the smallest cap under which a cell runs, less its
traced tensors: 4 MiB for a classifier-only cell of 1,000 classes, 22 MiB at 300,000 classes, 19 MiB
for an mbf cell."""

PREDICT_MODULE = "bench.workload.predict"
"""The torch-side entry point that traces cells: a JSON cell config a line on stdin, its trace a line on stdout."""

TRACE_ORDER = ("r200", "r100", "r50", "r34", "mbf", "r18", "none")
"""Backbones by how long a trace of their step takes, longest first: cells are traced in this order,
so that the workers run out of cells at about the same time."""

MAX_TRACE_WORKERS = 4
"""Trace subprocesses at most (each imports torch and holds a step's Python objects)."""

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


def predict_cells(
    cells: list[Cell],
    num_workers: int | None = None,
    timeout_s: float = 600.0,
    progress: TraceProgress | None = None,
    cache: TraceCache | None = None,
) -> list[Prediction]:
    """Predict many cells: each trace read from the cache (bench.workload.trace_cache), or traced in up
    to num_workers subprocesses (torch is imported there, not here), once per distinct step, and cached.

    progress hears of each trace as it ends (by default a line on stderr when stderr is a terminal).
    Raises RuntimeError with the tracer's last error line when a subprocess fails.
    """
    with contextlib.closing(Tracer(num_workers, timeout_s, progress, cache)) as tracer:
        return tracer.predict(cells)


def prediction_of(cell: Cell, traced: dict) -> Prediction:
    """The prediction from cell's trace (bench.workload.memtrace.Trace as a dict) and what it cannot see."""
    parts = dict(traced["parts"])
    parts[DDP_BUCKETS] = traced["backbone_bytes"] + 2 * DDP_BUCKET_CAP_BYTES if cell.backbone != "none" else 0
    # on a GPU the tensors take what the caching allocator reserves for them, more than their peak
    reserved_bytes = traced["reserved_bytes"]
    allocator_bytes = reserved_bytes - traced["peak_bytes"] if reserved_bytes is not None else 0
    parts[GPU_ONLY] = GPU_RUNTIME.bytes_for(cell) + allocator_bytes
    parts[CPU_ONLY] = 0 if cell.on_gpu else CPU_FIRST_STEP_BYTES
    return Prediction(peak_bytes=sum(parts.values()), parts={name: parts[name] for name in PARTS})


class Tracer:
    """Traces of cells for many calls: read from the cache, else traced in up to num_workers subprocesses that
    stay up from one call to the next (each imports torch once, seconds), until close.

    progress hears of each trace as it ends (by default a line on stderr when stderr is a terminal).
    A call raises RuntimeError with a tracer's last error line when a subprocess fails, or when one call's
    traces take more than timeout_s; the subprocesses are stopped then, and started afresh by the next call.
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout_s: float = 600.0,
        progress: TraceProgress | None = None,
        cache: TraceCache | None = None,
    ) -> None:
        self.num_workers = num_workers or default_num_workers()
        self.timeout_s = timeout_s
        self.progress = progress if progress is not None else TraceProgress.on_terminal()
        self.cache = cache if cache is not None else TraceCache()
        self.workers: list[TraceWorker] = []

    def predict(self, cells: list[Cell]) -> list[Prediction]:
        """Each cell's prediction."""
        return [prediction_of(cell, trace) for cell, trace in zip(cells, self.traces(cells), strict=True)]

    def traces(self, cells: list[Cell]) -> list[dict]:
        """Each cell's trace (bench.workload.memtrace.Trace as a dict)."""
        keys = [trace_key(cell) for cell in cells]
        traces = {key: self.cache.get(key) for key in dict.fromkeys(keys)}
        missing = list({key: cell for key, cell in zip(keys, cells, strict=True) if traces[key] is None}.items())
        missing.sort(key=lambda item: TRACE_ORDER.index(item[1].backbone) if item[1].backbone in TRACE_ORDER else 0)
        self.progress.start(len(missing), len(traces) - len(missing))
        if missing:
            for index, trace in self.trace_cells([cell for _, cell in missing]):
                key, cell = missing[index]
                self.cache.put(key, trace)
                traces[key] = trace
                self.progress.traced(cell)
        return [traces[key] for key in keys]

    def trace_cells(self, cells: list[Cell]) -> Iterator[tuple[int, dict]]:
        """Trace cells in the subprocesses, each taking the next cell when done with one; yields (index of the
        cell, its trace) as each trace ends."""
        wanted = min(self.num_workers, len(cells))
        self.workers += [TraceWorker() for _ in range(wanted - len(self.workers))]
        todo = Todo(cells)
        done: queue.SimpleQueue = queue.SimpleQueue()
        for worker in self.workers[:wanted]:
            threading.Thread(target=worker.serve, args=(todo, done), daemon=True).start()
        deadline = time.monotonic() + self.timeout_s
        finished = False
        try:
            for _ in cells:
                try:
                    index, result = done.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise RuntimeError(
                        f"memory prediction failed: the traces took more than {self.timeout_s:g} s"
                    ) from None
                if isinstance(result, Exception):
                    raise result
                yield index, result
            finished = True
        finally:
            if not finished:  # a worker may still be tracing, or be broken: none is reused
                self.close()

    def close(self) -> None:
        """Stop the subprocesses."""
        for worker in self.workers:
            worker.close()
        self.workers = []


def default_num_workers() -> int:
    """One trace per core this process may use, at most MAX_TRACE_WORKERS."""
    return max(1, min(MAX_TRACE_WORKERS, usable_cpus()))


class Todo:
    """The cells still to trace, longest first. A worker goes on with the cells that run the same backbone step
    as the cell it traced last (FakeTensorMode's cache, which lives in the worker, then answers most of the
    backbone's ops without running them); with none left, it takes the first cell of a step no other worker is
    tracing, else the first cell."""

    def __init__(self, cells: list[Cell]) -> None:
        self.items = list(enumerate(cells))
        self.tracing: dict[int, Cell] = {}
        """What each worker (by its id) traces now, or traced last."""
        self.lock = threading.Lock()

    def take(self, worker: int) -> tuple[int, Cell] | None:
        """The next (index, cell) for a worker, or None when none is left."""
        with self.lock:
            if not self.items:
                return None
            last = step_of(self.tracing[worker]) if worker in self.tracing else None
            busy = {step_of(cell) for other, cell in self.tracing.items() if other != worker}
            mine = [at for at, (_, cell) in enumerate(self.items) if step_of(cell) == last]
            free = [at for at, (_, cell) in enumerate(self.items) if step_of(cell) not in busy]
            index, cell = self.items.pop([*mine, *free, 0][0])
            self.tracing[worker] = cell
            return index, cell


def step_of(cell: Cell) -> tuple:
    """What a cell's backbone step is: cells alike in it run the same backbone ops on tensors of the same shapes."""
    return cell.backbone, cell.per_gpu_batch, cell.precision, cell.on_gpu


class TraceWorker:
    """A `python -m bench.workload.predict` subprocess: one cell config a line in, its trace a line out."""

    def __init__(self) -> None:
        self.errors = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", PREDICT_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
        )

    def serve(self, todo: Todo, done: queue.SimpleQueue) -> None:
        """Trace cells from todo until it is empty, each (index, trace) or the first error into done."""
        while (item := todo.take(id(self))) is not None:
            index, cell = item
            try:
                done.put((index, self.trace(cell)))
            except (OSError, ValueError, RuntimeError) as error:
                done.put((index, error if isinstance(error, RuntimeError) else self.failure()))
                return

    def trace(self, cell: Cell) -> dict:
        self.proc.stdin.write(json.dumps(cell.to_dict()) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise self.failure()
        return json.loads(line)

    def failure(self) -> RuntimeError:
        """The subprocess's last error line, once it has ended (nothing of it once closed)."""
        self.proc.wait()
        errors = ""
        with contextlib.suppress(OSError, ValueError):
            self.errors.seek(0)
            errors = self.errors.read()
        last = errors.strip().splitlines()[-1:] or [f"exit code {self.proc.returncode}"]
        return RuntimeError(f"memory prediction failed: {last[0]}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.errors):
            with contextlib.suppress(OSError):
                stream.close()


class TraceProgress:
    """Tells a stream how far the traces of predict_cells are: a line as they start, then one per cell.

    Only cells that are traced are told of (any trace takes seconds, torch's import alone); cells
    read from the cache are not, so that a plan made again says nothing.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        """Where the lines go; None says nothing."""
        self.total = 0
        self.done = 0
        self.started = time.monotonic()

    @classmethod
    def on_terminal(cls) -> TraceProgress:
        """Lines on stderr where it is a terminal; nothing where it is a file or a pipe."""
        return cls(sys.stderr if sys.stderr.isatty() else None)

    def start(self, num_traced: int, num_cached: int) -> None:
        self.total, self.done, self.started = num_traced, 0, time.monotonic()
        if num_traced:
            cached = f" ({num_cached} more from the cache)" if num_cached else ""
            self.say(f"tracing the step of {num_traced} cell{'s' * (num_traced != 1)} to predict memory{cached}")

    def traced(self, cell: Cell) -> None:
        self.done += 1
        precision = f"{cell.precision}{' tf32' if cell.tf32 else ''}"
        what = f"{cell.backbone}, {cell.classes:,} classes, batch {cell.batch_size}, {precision}"
        self.say(f"traced {self.done}/{self.total}: {what} ({time.monotonic() - self.started:.1f} s)")

    def say(self, line: str) -> None:
        if self.stream is not None:
            print(line, file=self.stream, flush=True)


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
