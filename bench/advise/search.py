"""The configurations of a training job on each GPU and count, their memory and speed, and the choice.

Every configuration of the knobs arcface_torch has (batch a GPU, Partial FC sample rate, precision)
is predicted on each GPU and count: its speed by the time model (bench.time_model; the server the
GPU's report was published on, else its usual 8-GPU server; nodes of 8 past 8 GPUs), its memory
composed from few traces (bench.advise.compose). A configuration whose lower memory bound exceeds
the card never fits. At each GPU and count the configurations that may fit are traced in full, as
`pfcbench plan` traces them, fastest first, until one fits: the one chosen, so that what is chosen
and printed is the memory model's own verdict. The rest keep their composed estimate (memory_basis)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from bench.advise.compose import Composed, compose_cells
from bench.config import Cell
from bench.gpus import GpuSpec
from bench.memory import Prediction, TraceProgress, predict_cells
from bench.report.training_runs import TrainingRun
from bench.time_model import GPUS_PER_SERVER, StepTime, Target, target_for

BATCHES = (32, 64, 128, 256, 512)
"""Batches a GPU searched by default: powers of two."""
SAMPLE_RATES = (1.0, 0.5, 0.2, 0.1)
PRECISIONS = ("fp16", "bf16", "fp32")
NEAR = 0.2
"""How far above the card a composed estimate may be and the configuration still fit (the estimates have run
up to 12% below the full trace's): such configurations are traced in full before they are ruled out."""


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

    @property
    def card_gib(self) -> float:
        return self.gpu.memory_gib

    @property
    def basis(self) -> str:
        """Where the memory verdict comes from: traced, lower bound (no fit whatever the allocator), estimate."""
        if self.traced is not None:
            return "traced"
        return "estimate" if self.composed.lower.fits(self.card_gib) else "lower bound"

    @property
    def memory(self) -> Prediction:
        if self.traced is not None:
            return self.traced
        return self.composed.estimate if self.basis == "estimate" else self.composed.lower

    @property
    def fits(self) -> bool:
        return bool(self.memory.fits(self.card_gib))

    @property
    def may_fit(self) -> bool:
        """Whether it may fit: its traced verdict, else no where its lower bound does not fit, else whether its
        estimate is below the card or within NEAR of it."""
        if self.traced is not None or self.basis == "lower bound":
            return self.fits
        return self.composed.estimate.peak_gib <= (1 + NEAR) * self.card_gib

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


def first_fit(configs: list[Config], order) -> Config | None:
    """The first configuration in order (a sort key) that may fit; None where none may."""
    return next((c for c in sorted(configs, key=order) if c.may_fit), None)


def by_speed(config: Config) -> tuple:
    """Fastest first; of equals, the least memory."""
    return (-config.samples_per_s, config.composed.estimate.peak_bytes)


def by_sample_rate(config: Config) -> tuple:
    """The largest sample rate first, then the largest batch, then the fastest."""
    return (-config.cell.sample_rate, -config.cell.per_gpu_batch, -config.samples_per_s)


def walk(groups: dict, order, progress: TraceProgress | None) -> dict:
    """Per group of configurations, the first in order that fits as traced in full: the configurations that
    may fit are traced in that order, a round of every group's next at once, until one fits or none may."""
    found: dict = {}
    while True:
        picks = {key: first_fit(configs, order) for key, configs in groups.items() if key not in found}
        found |= {key: c for key, c in picks.items() if c is None or c.traced is not None}
        untraced = [c for key, c in picks.items() if key not in found]
        if not untraced:
            return found
        trace_in_full(untraced, progress)


def trace_in_full(configs: list[Config], progress: TraceProgress | None) -> None:
    """Give each configuration its full trace's prediction, as `pfcbench plan` makes it."""
    for config, prediction in zip(configs, predict_cells([c.cell for c in configs], progress=progress), strict=True):
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
    memories = compose_cells(cells, progress)
    configs = [
        Config(gpu=key[0], gpus=key[1], cell=cell, run=job.run, step=step, composed=memory)
        for key, cell, step, memory in zip(keys, cells, steps, memories, strict=True)
    ]
    advice = Advice(job=job, gpus=gpus, counts=counts, configs=configs, targets=targets)
    groups = {(gpu.name, count): advice.at(gpu, count) for gpu in gpus for count in counts}
    advice.chosen = walk(groups, by_speed, progress)
    larger = {
        (gpu.name, count): advice.at(gpu, above)
        for gpu in gpus
        for count in counts
        if advice.chosen[(gpu.name, count)] is None
        for above in [next((n for n in counts if n > count and advice.chosen[(gpu.name, n)]), None)]
        if above is not None
    }
    advice.instead = walk(larger, by_sample_rate, progress)
    advice.splits = {gpu.name: memory_split(advice, gpu, progress) for gpu in gpus}
    return advice


def least_memory(advice: Advice, gpu: GpuSpec, count: int) -> Config:
    """The configuration at gpu and count that needs the least memory."""
    return min(advice.at(gpu, count), key=lambda c: c.memory.peak_bytes)


def memory_split(advice: Advice, gpu: GpuSpec, progress: TraceProgress | None) -> tuple[Config, list[Config]] | None:
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
    trace_in_full([c for c in at_counts if c is not None and c.traced is None], progress)
    return reference, [c for c in at_counts if c is not None]
