"""One benchmark cell: the whole configuration of one distributed training run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

BACKBONES = ("r18", "r34", "r50", "r100", "r200", "mbf", "none")
PRECISIONS = ("fp32", "fp16", "bf16")
MARGINS = ("arcface", "cosface")
IMPLS = ("arcface_torch", "arcface_torch_2021")
LABEL_MODES = ("uniform", "constant")
DEVICES = ("cuda", "cpu")
CHOICES = {
    "backbone": BACKBONES,
    "precision": PRECISIONS,
    "margin": MARGINS,
    "impl": IMPLS,
    "label_mode": LABEL_MODES,
    "device": DEVICES,
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
    """Program of the step: arcface_torch (today's train_v2.py) or arcface_torch_2021 (the 2021 train.py)."""
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

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        for name in (
            "classes",
            "batch_size",
            "nnodes",
            "nproc_per_node",
            "embedding_size",
            "num_windows",
            "steps_per_window",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be 0 or more, not {self.warmup_steps}")
        if self.device == "cuda" and self.warmup_steps < 1:
            raise ValueError("warmup_steps must be at least 1 on cuda: cuDNN's autotuning would fall in a timed window")
        if not 0.0 < self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], not {self.sample_rate}")
        if self.batch_size % self.world_size:
            raise ValueError(
                f"batch_size {self.batch_size} does not split over {self.world_size} ranks "
                f"(nnodes {self.nnodes} x nproc_per_node {self.nproc_per_node})"
            )
        if self.classes < self.world_size:
            raise ValueError(f"classes ({self.classes}) must be at least the number of ranks ({self.world_size})")
        if self.max_memory_gib is not None and self.max_memory_gib <= 0:
            raise ValueError(f"max_memory_gib must be positive, not {self.max_memory_gib}")

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

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
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        """Build a cell from plain data, turning wrong types and unknown keys into ValueError."""
        unknown = sorted(set(data) - set(FIELD_TYPES))
        if unknown:
            raise ValueError(f"unknown cell field {unknown[0]!r}")
        for name, value in data.items():
            check_type(name, value)
        values = {k: float(v) if FIELD_TYPES[k] is float and v is not None else v for k, v in data.items()}
        return cls(**values)

    @property
    def cell_id(self) -> str:
        """A stable hash of the normalised configuration."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


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
        raise ValueError(f"{name} must be {want.__name__}, not {type(value).__name__} {value!r}")


DERIVED_FIELDS = ("world_size", "per_gpu_batch", "fp16", "partial_fc")
"""Read-only properties of a cell that tables may show like fields."""
