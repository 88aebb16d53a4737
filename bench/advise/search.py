"""The configurations of a training job on each GPU and count, their memory and speed, and the choice.

Every configuration of the knobs arcface_torch has (batch a GPU, Partial FC sample rate, precision)
is predicted on each GPU and count: its speed by the time model (bench.time_model; the server the
GPU's report was published on, else its usual 8-GPU server; nodes of 8 past 8 GPUs), its memory
composed from few traces (bench.advise.compose). A configuration whose lower memory bound exceeds
the card never fits. At each GPU and count the configurations that may fit are traced in full, as
`pfcbench plan` traces them, fastest first, until one fits: the one chosen, so that what is chosen
and printed is the memory model's own verdict. The rest keep their composed estimate, or its lower bound,
or where their twin in the other half precision was traced, the estimate with the twin's allocator
reserve (memory_basis)."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

from bench.advise.compose import Composed, compose_cells
from bench.config import Cell
from bench.gpus import GpuSpec
from bench.memory import GPU_ONLY, Prediction, TraceProgress, Tracer
from bench.report.training_runs import TrainingRun
from bench.time_model import GPUS_PER_SERVER, StepTime, Target, target_for

BATCHES = (32, 64, 128, 256, 512)
"""Batches a GPU searched by default: powers of two."""
SAMPLE_RATES = (1.0, 0.5, 0.2, 0.1)
PRECISIONS = ("fp16", "bf16", "fp32")
HALF_PRECISIONS = ("fp16", "bf16")
NEAR = 0.08
"""How far above the card a composed estimate may be and the configuration still fit: such configurations are
traced in full before they are ruled out. Twice the most the estimates have run above the full trace's, 4.0%
over 540 configurations of the four impls (benchmarks/advise_estimates.md); they run up to 17% below it."""
TWIN_NEAR = 0.02
"""The same for a configuration whose twin in the other half precision was traced (twins' full traces have
differed by less than 0.1%)."""


@dataclass(frozen=True, kw_only=True)
class Job:
    """A training job as its user thinks of it: a dataset (or classes and images), a backbone, an impl."""

    backbone: str
    classes: int
    run: TrainingRun
    dataset: str | None = None
    """The dataset's name where one was named."""
    impl: str = "arcface_torch"
    embedding_size: int = 512


@dataclass(frozen=True, kw_only=True)
class Knobs:
    """What is searched at each GPU and count."""

    batches: tuple[int, ...] = BATCHES
    sample_rates: tuple[float, ...] = SAMPLE_RATES
    precisions: tuple[str, ...] = PRECISIONS

    def precisions_on(self, gpu: GpuSpec) -> list[str]:
        """The precisions gpu runs: fp32, and fp16 and bf16 where it has their rate."""
        return [p for p in self.precisions if p == "fp32" or gpu.peaks.at(p)]


def published_report(gpu: GpuSpec) -> dict:
    """The [report] of the packaged matrix published on gpu (its server); {} for a card no report measured."""
    from bench.matrix import load_matrix, packaged_matrices

    reports = (load_matrix(path).report for path in packaged_matrices().values())
    return next((report for report in reports if report.get("gpu") == gpu.name), {})


def target_of(gpu: GpuSpec, link: str | None) -> Target:
    """Where gpu's configurations are predicted: the server its report was published on (the RTX 3080's
    PCIe 3.0 host, the V100's NVLink), else its usual 8-GPU server; --link names another link."""
    return target_for(gpu, published_report(gpu), link)


def layout(count: int) -> tuple[int, int]:
    """Nodes and GPUs a node of a job of count GPUs: one node up to 8, else nodes of 8."""
    return (1, count) if count <= GPUS_PER_SERVER else (count // GPUS_PER_SERVER, GPUS_PER_SERVER)


def job_cell(job: Job, gpu: GpuSpec, count: int, batch: int, rate: float, precision: str) -> Cell:
    """The cell of one configuration; TF32 allowed where the GPU has it, as PyTorch 1.9 ran the reports (fp32
    convolutions, and the fp32 GEMMs of the classifier in every precision)."""
    nnodes, per_node = layout(count)
    return Cell(
        backbone=job.backbone,
        classes=job.classes,
        batch_size=batch * count,
        nnodes=nnodes,
        nproc_per_node=per_node,
        precision=precision,
        tf32=gpu.peaks.tf32 is not None,
        sample_rate=rate,
        embedding_size=job.embedding_size,
        impl=job.impl,
    )


@dataclass(kw_only=True)
class Config:
    """One configuration on one GPU and count: its speed, and its memory as composed or traced."""

    gpu: GpuSpec
    gpus: int
    cell: Cell
    run: TrainingRun
    step: StepTime
    composed: Composed
    traced: Prediction | None = None
    twin: Config | None = None
    """The same configuration in the other half precision (fp16 for bf16, bf16 for fp16) where both are searched:
    the same tensors but for the loss scaler's few bytes, as fast on the card."""

    @property
    def card_gib(self) -> float:
        return self.gpu.memory_gib

    @property
    def basis(self) -> str:
        """Where the memory verdict comes from: traced; lower bound (no fit whatever the allocator); twin traced
        (the estimate, less what its twin's estimate missed of the twin's full trace); estimate."""
        if self.traced is not None:
            return "traced"
        if not self.composed.lower.fits(self.card_gib):
            return "lower bound"
        return "twin traced" if self.twin is not None and self.twin.traced is not None else "estimate"

    @property
    def memory(self) -> Prediction:
        if self.traced is not None:
            return self.traced
        if self.basis == "twin traced":
            return corrected(self.composed.estimate, self.twin.composed.estimate, self.twin.traced)
        return self.composed.estimate if self.basis == "estimate" else self.composed.lower

    @property
    def fits(self) -> bool:
        return bool(self.memory.fits(self.card_gib))

    @property
    def may_fit(self) -> bool:
        """Whether it may fit: its traced verdict, else no where its lower bound does not fit, else whether its
        memory is below the card or within TWIN_NEAR of it where its twin was traced, NEAR otherwise."""
        if self.traced is not None or self.basis == "lower bound":
            return self.fits
        near = TWIN_NEAR if self.basis == "twin traced" else NEAR
        return self.memory.peak_gib <= (1 + near) * self.card_gib

    @property
    def samples_per_s(self) -> float:
        return self.step.samples_per_s


@dataclass(kw_only=True)
class Advice:
    """Every configuration searched, and per GPU and count the fastest that fits (None where none does)."""

    job: Job
    gpus: list[GpuSpec]
    counts: list[int]
    configs: list[Config]
    targets: dict[str, Target]
    """Where each GPU's configurations are predicted, by GPU name."""
    chosen: dict[tuple[str, int], Config | None] = field(default_factory=dict)
    """The fastest configuration that fits, by GPU name and count."""
    instead: dict[tuple[str, int], Config | None] = field(default_factory=dict)
    """Where nothing fits a GPU at a count: at the smallest count that fits, the configuration of the largest
    sample rate that fits (of it the largest batch)."""
    splits: dict[str, tuple[Config, list[Config]] | None] = field(default_factory=dict)
    """By GPU name: the configuration chosen at the largest count that fits, and it at every count (memory_split)."""

    def at(self, gpu: GpuSpec, count: int) -> list[Config]:
        return [c for c in self.configs if c.gpu.name == gpu.name and c.gpus == count]


def corrected(estimate: Prediction, twins_estimate: Prediction, twins_trace: Prediction) -> Prediction:
    """An estimate less what its twin's estimate missed of its twin's full trace: the allocator's reserve, which
    the composition estimates (bench.advise.compose) and the twins share."""
    missed = twins_trace.peak_bytes - twins_estimate.peak_bytes
    parts = estimate.parts | {GPU_ONLY: estimate.parts[GPU_ONLY] + missed}
    return Prediction(peak_bytes=estimate.peak_bytes + missed, parts=parts)


def pair_twins(configs: list[Config]) -> None:
    """Tell each fp16 and bf16 configuration of the same GPU, count and knobs of its twin."""
    half = {(c.gpu.name, c.gpus, c.cell): c for c in configs if c.cell.precision in HALF_PRECISIONS}
    for (gpu, gpus, cell), config in half.items():
        other, *_ = (p for p in HALF_PRECISIONS if p != cell.precision)
        config.twin = half.get((gpu, gpus, dataclasses.replace(cell, precision=other)))


def by_speed(config: Config) -> tuple:
    """Fastest first; of equals, the least memory."""
    return (-config.samples_per_s, config.composed.estimate.peak_bytes)


def by_sample_rate(config: Config) -> tuple:
    """The largest sample rate first, then the largest batch, then the fastest."""
    return (-config.cell.sample_rate, -config.cell.per_gpu_batch, -config.samples_per_s)


def walk(groups: dict, order, tracer: Tracer) -> dict:
    """Per group of configurations, the first in order that fits as traced in full: the configurations that
    may fit are traced in that order, a round of every group's next at once, until one fits or none may."""
    found: dict = {}
    while True:
        queues = {
            key: [c for c in sorted(configs, key=order) if c.may_fit]
            for key, configs in groups.items()
            if key not in found
        }
        found |= {
            key: queue[0] if queue else None
            for key, queue in queues.items()
            if not queue or queue[0].traced is not None
        }
        waiting = [[c for c in queue if c.traced is None] for key, queue in queues.items() if key not in found]
        if not waiting:
            return found
        trace_in_full(next_round(waiting, tracer.num_workers), tracer)


def next_round(waiting: list[list[Config]], num_workers: int) -> list[Config]:
    """The next configuration of each group still waiting; then, while a trace subprocess would sit idle in the
    round, the ones after them, group by group (but the twins of those picked), which later rounds would trace."""
    picked: list[Config] = []
    cells: set[Cell] = set()
    for depth in range(max(map(len, waiting))):
        for queue in waiting:
            if depth < len(queue) and (depth == 0 or (len(cells) % num_workers and queue[depth].twin not in picked)):
                picked.append(queue[depth])
                cells.add(queue[depth].cell)
        if len(cells) % num_workers == 0:
            break
    return picked


def trace_in_full(configs: list[Config], tracer: Tracer) -> None:
    """Give each configuration its full trace's prediction, as `pfcbench plan` makes it."""
    for config, prediction in zip(configs, tracer.predict([c.cell for c in configs]), strict=True):
        config.traced = prediction


def advise(
    job: Job,
    gpus: list[GpuSpec],
    counts: list[int],
    knobs: Knobs,
    link: str | None = None,
    progress: TraceProgress | None = None,
) -> Advice:
    """Search every configuration of the knobs on each GPU and count; choose the fastest that fits.

    Raises bench.time_model.CannotPredict where the time model has no prediction, RuntimeError where a
    cell cannot be traced.
    """
    keys = [
        (gpu, count, batch, rate, precision)
        for gpu in gpus
        for count in counts
        for precision in knobs.precisions_on(gpu)
        for rate in knobs.sample_rates
        for batch in knobs.batches
    ]
    cells = [job_cell(job, *key) for key in keys]
    targets = {gpu.name: target_of(gpu, link) for gpu in gpus}
    steps = [targets[key[0].name].predict(cell) for key, cell in zip(keys, cells, strict=True)]
    # one set of trace subprocesses for every round of traces: each imports torch once
    with contextlib.closing(Tracer(progress=progress)) as tracer:
        memories = compose_cells(cells, tracer)
        configs = [
            Config(gpu=key[0], gpus=key[1], cell=cell, run=job.run, step=step, composed=memory)
            for key, cell, step, memory in zip(keys, cells, steps, memories, strict=True)
        ]
        pair_twins(configs)
        advice = Advice(job=job, gpus=gpus, counts=counts, configs=configs, targets=targets)
        groups = {(gpu.name, count): advice.at(gpu, count) for gpu in gpus for count in counts}
        advice.chosen = walk(groups, by_speed, tracer)
        advice.instead = walk(at_larger_counts(advice), by_sample_rate, tracer)
        advice.splits = {gpu.name: memory_split(advice, gpu, tracer) for gpu in gpus}
    return advice


def at_larger_counts(advice: Advice) -> dict[tuple[str, int], list[Config]]:
    """By GPU name and each count where nothing fits: the configurations at the smallest larger count where one
    does (none where no larger count has one)."""
    larger = {}
    for gpu in advice.gpus:
        for count in advice.counts:
            if advice.chosen[(gpu.name, count)] is None:
                above = next((n for n in advice.counts if n > count and advice.chosen[(gpu.name, n)]), None)
                if above is not None:
                    larger[(gpu.name, count)] = advice.at(gpu, above)
    return larger


def least_memory(advice: Advice, gpu: GpuSpec, count: int) -> Config:
    """The configuration at gpu and count that needs the least memory."""
    return min(advice.at(gpu, count), key=lambda c: c.memory.peak_bytes)


def memory_split(advice: Advice, gpu: GpuSpec, tracer: Tracer) -> tuple[Config, list[Config]] | None:
    """The configuration chosen at the largest count that fits gpu, traced at every count: how its memory a
    GPU falls as the count grows (the classifier's shard does, the backbone's state does not)."""
    chosen = [advice.chosen[(gpu.name, count)] for count in sorted(advice.counts, reverse=True)]
    reference = next((c for c in chosen if c is not None), None)
    if reference is None:
        return None
    cell = reference.cell
    at_counts = []
    for count in advice.counts:
        nnodes, per_node = layout(count)
        at = dataclasses.replace(cell, batch_size=cell.per_gpu_batch * count, nnodes=nnodes, nproc_per_node=per_node)
        known = next((c for c in advice.at(gpu, count) if c.cell == at), None)
        at_counts.append(known)
    trace_in_full([c for c in at_counts if c is not None and c.traced is None], tracer)
    return reference, [c for c in at_counts if c is not None]
