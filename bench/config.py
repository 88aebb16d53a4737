"""One benchmark cell: the whole configuration of one distributed training run."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

IMPLS = ("arcface_torch", "arcface_torch_2021", "arcface_torch_2022", "fused")
"""Impl names: the program and classifier a cell's step runs (bench.impls gives each one's spec)."""
BACKBONES = ("r18", "r34", "r50", "r100", "r200", "mbf", "none")
"""Backbone names, with arcface_torch's spelling (bench.workload.backbones builds each)."""
PRECISIONS = ("fp32", "fp16", "bf16")
MARGINS = ("arcface", "cosface")
LABEL_MODES = ("uniform", "constant")
DEVICES = ("cuda", "cpu")
DATA_KINDS = ("synthetic", "records")
CHOICES = {
    "backbone": BACKBONES,
    "precision": PRECISIONS,
    "margin": MARGINS,
    "impl": IMPLS,
    "label_mode": LABEL_MODES,
    "device": DEVICES,
    "data": DATA_KINDS,
}
"""The text fields of a cell that take one of a few values."""


@dataclass(frozen=True, kw_only=True)
class Cell:
    """A training configuration; every field is part of the cell id."""

    backbone: str = "r50"
    """Backbone name: r18, r34, r50, r100, r200, mbf, or none (random embeddings)."""
    classes: int = 1000
    """Number of identities the Partial FC classifier holds over all ranks."""
    batch_size: int = 512
    """Global batch: samples per step over all ranks, as in the published reports."""
    nnodes: int = 1
    """Machines the job spans."""
    nproc_per_node: int = 1
    """Ranks (one per GPU) on each machine."""
    device: str = "cuda"
    """cuda (NCCL) or cpu (gloo)."""
    precision: str = "fp32"
    """fp32, fp16 (autocast + GradScaler) or bf16 (autocast) for the backbone trunk."""
    tf32: bool = False
    """Allow TF32 in fp32 convolutions and matmuls (PyTorch 1.9 did by default on Ampere)."""
    channels_last: bool = False
    """Run the backbone in channels_last memory format."""
    sample_rate: float = 1.0
    """Partial FC sample rate in (0, 1]; 1.0 is plain model parallel."""
    embedding_size: int = 512
    """Embedding dimension."""
    margin: str = "arcface"
    """arcface (s=64, m=0.5) or cosface (s=64, m=0.4)."""
    impl: str = "arcface_torch"
    """Program of the step: arcface_torch (today's train_v2.py), arcface_torch_2021 (the August 2021
    train.py), arcface_torch_2022 (the January 2022 train.py) or fused."""
    label_mode: str = "uniform"
    """uniform: labels drawn over all classes; constant: label 1 forever (arcface_torch's SyntheticDataset)."""
    warmup_steps: int = 10
    """Steps run before the clock starts (cudnn autotuning, allocator growth); at least 1 on cuda."""
    num_windows: int = 5
    """Timed windows; samples/sec is their median."""
    steps_per_window: int = 10
    """Steps in each timed window."""
    max_memory_gib: float | None = None
    """Memory cap per rank (CUDA memory fraction, or address space on the CPU); None is no cap."""
    seed: int = 0
    """Seed for weights, labels and sampling."""
    emulated: bool = False
    """Run only rank 0 of the job, alone in one process on one device: its batch and class shard, fed
    the other ranks' embeddings and labels synthesised, collectives local. Its memory is rank 0's;
    its samples/sec an estimate without communication."""
    data: str = "synthetic"
    """synthetic (a batch made on the device) or records (train.rec + train.idx in data_path, as the A10, A30 and A100 reports)."""
    data_path: str = ""
    """Folder holding train.rec + train.idx when data is records (pfcbench dataset make writes one)."""
    num_workers: int = 2
    """DataLoader worker processes per rank reading records (arcface_torch: 2); 0 reads in the step's process."""

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {shown(getattr(self, name))}")
        for name, (least, most) in WHOLE_NUMBER_RANGES.items():
            check_number(name, getattr(self, name), least, most)
        if self.on_gpu and self.warmup_steps < 1:
            raise ValueError("warmup_steps must be at least 1 on cuda: cuDNN's autotuning would fall in a timed window")
        check_number("sample_rate", self.sample_rate, 0, 1, above_least=True, text="in (0, 1]")
        if self.batch_size % self.world_size:
            raise ValueError(
                f"batch_size {self.batch_size} does not split over {self.world_size} ranks "
                f"(nnodes {self.nnodes} x nproc_per_node {self.nproc_per_node})"
            )
        if self.emulated and self.world_size < 2:
            raise ValueError("an emulated cell needs a job of at least 2 ranks (nnodes x nproc_per_node) to emulate")
        if self.classes < self.world_size:
            raise ValueError(f"classes ({self.classes}) must be at least the number of ranks ({self.world_size})")
        if "\x00" in self.data_path:
            raise ValueError(f"data_path must be a folder name, not {shown(self.data_path)}")
        if self.max_memory_gib is not None:
            check_number(
                "max_memory_gib",
                self.max_memory_gib,
                0,
                MAX_MEMORY_GIB,
                above_least=True,
                text=f"a positive number of GiB, at most {MAX_MEMORY_GIB:,}",
            )

    @property
    def on_gpu(self) -> bool:
        """Whether each rank has a GPU of its own (device cuda), which is what a launcher gives it and a
        memory limit means; the one place a cell says so."""
        return self.device == "cuda"

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @property
    def launched_nodes(self) -> int:
        """Machines the launch spans: one for an emulated cell."""
        return 1 if self.emulated else self.nnodes

    @property
    def launched_ranks_per_node(self) -> int:
        """Processes the launch starts on each machine: one for an emulated cell."""
        return 1 if self.emulated else self.nproc_per_node

    @property
    def launched_ranks(self) -> int:
        """Processes the launch starts in all: world_size, or one for an emulated cell."""
        return self.launched_nodes * self.launched_ranks_per_node

    @property
    def per_gpu_batch(self) -> int:
        return self.batch_size // self.world_size

    @property
    def fp16(self) -> bool:
        return self.precision == "fp16"

    @property
    def partial_fc(self) -> bool:
        return self.sample_rate < 1.0

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data: a new dict each call, built from the one made once per cell."""
        return dict(self.field_values)

    @functools.cached_property
    def field_values(self) -> dict[str, Any]:
        """Every field by name, computed once (the values are plain numbers, texts and booleans)."""
        return {name: getattr(self, name) for name in FIELD_TYPES}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        """Build a cell from plain data, turning wrong types and unknown keys into ValueError."""
        unknown = sorted(set(data) - set(FIELD_TYPES))
        if unknown:
            raise ValueError(unknown_field(unknown[0]))
        for name, value in data.items():
            check_type(name, value)
        values = {k: float(v) if FIELD_TYPES[k] is float and v is not None else v for k, v in data.items()}
        return cls(**values)

    @functools.cached_property
    def cell_id(self) -> str:
        """A stable hash of the normalised configuration.

        Fields added after results were first recorded leave the hash when at their default, so
        that the cells of those results keep their ids.
        """
        config = {
            k: v for k, v in self.field_values.items() if k not in HASHED_ONLY_WHEN_SET or HASHED_ONLY_WHEN_SET[k] != v
        }
        text = json.dumps(config, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


HASHED_ONLY_WHEN_SET = {"emulated": False, "data": "synthetic", "data_path": "", "num_workers": 2}
"""Fields that a cell id includes only when they differ from this value."""

WHOLE_NUMBER_RANGES: dict[str, tuple[int, int]] = {
    "classes": (1, 10**9),
    "batch_size": (1, 10**7),
    "nnodes": (1, 10**4),
    "nproc_per_node": (1, 1024),
    "embedding_size": (1, 65536),
    "warmup_steps": (0, 10**6),
    "num_windows": (1, 10**5),
    "steps_per_window": (1, 10**6),
    "seed": (0, 2**63 - 1),
    "num_workers": (0, 256),
}
"""Least and most of each whole-number field: far past any real run, so that a slip of the keyboard
(classes = 10**30) is refused before anything starts instead of failing deep inside torch."""

MAX_MEMORY_GIB = 2**20
"""Largest memory cap per rank, in GiB (1 PiB)."""

MAX_TIMEOUT_S = 10**7
"""Longest timeout accepted, in seconds (about four months)."""

SHOWN_CHARS = 60


def unknown_field(key: Any) -> str:
    """What to say of a key that is no cell field: its name, and the field it probably meant where one is near."""
    said = f"unknown cell field {shown(key)}"
    if not isinstance(key, str):
        return said
    squashed = {name.replace("_", ""): name for name in FIELD_TYPES}
    near = squashed.get(key.lower().replace("-", "").replace("_", "")) or next(
        iter(difflib.get_close_matches(key.lower().replace("-", "_"), FIELD_TYPES, n=1)), None
    )
    return f"{said}; did you mean {near}?" if near else said


def one_line(text: str) -> str:
    """text with each control character escaped as Python writes it (a newline as \\n), so that it prints as one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def shown(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut short when long."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 20]}... ({len(text):,} characters)"


def check_number(
    name: str, value: Any, least: float, most: float, *, above_least: bool = False, text: str | None = None
) -> None:
    """Raise ValueError unless value is a finite number from least (or above it) to most.

    The one check of every number a user gives: cell fields, timeouts, thresholds. text, when
    given, says what is wanted in place of the bounds.
    """
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    finite = is_number and (isinstance(value, int) or math.isfinite(value))
    if finite and (value > least if above_least else value >= least) and value <= most:
        return
    wanted = text or f"{'above' if above_least else 'at least'} {least:,} and at most {most:,}"
    raise ValueError(f"{name} must be {wanted}, not {shown(value)}")


def check_seconds(name: str, value: Any) -> None:
    """Raise ValueError unless value is a usable timeout: a finite number of seconds above 0."""
    check_number(
        name,
        value,
        0,
        MAX_TIMEOUT_S,
        above_least=True,
        text=f"a number of seconds above 0 and at most {MAX_TIMEOUT_S:,}",
    )


FIELD_TYPES: dict[str, type] = {
    f.name: {"int": int, "float": float, "bool": bool, "str": str, "float | None": float}[f.type]
    for f in dataclasses.fields(Cell)
}

OPTIONAL_FIELDS = frozenset({f.name for f in dataclasses.fields(Cell) if "None" in str(f.type)})


def check_type(name: str, value: Any) -> None:
    """Raise ValueError unless value has the type of cell field name (ints are valid floats)."""
    want = FIELD_TYPES[name]
    if value is None and name in OPTIONAL_FIELDS:
        return
    ok = (
        isinstance(value, bool)
        if want is bool
        else not isinstance(value, bool) and isinstance(value, (int, float) if want is float else want)
    )
    if not ok:
        raise ValueError(f"{name} must be {want.__name__}, not {type(value).__name__} {shown(value)}")


DERIVED_FIELDS = ("world_size", "per_gpu_batch", "fp16", "partial_fc")
"""Read-only properties of a cell that tables may show like fields."""
