"""What a registered impl is (bench.impls names them, bench.workload.registry builds them): its step,
its classifier and its cost, and the protocols its step and classifier keep.

Only annotations name torch here, so that the spec's type can be named without importing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bench.config import Cell
from bench.workload.cost import ImplCost, StepCost

if TYPE_CHECKING:
    import torch
    from torch import nn

    from bench.workload.collectives import Collectives


class Batch(Protocol):
    """Where a step's batches come from (made on the device, or read from record files)."""

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's images and labels."""

    def take_wait_s(self) -> float | None:
        """Seconds the steps since the last call waited for their batches; None when nothing is read."""

    def close(self) -> None: ...


class Step(Protocol):
    """One rank's training step, as the worker, its timed loop and the memory trace use it."""

    device: torch.device
    phase: str
    """Where the step is (setup, data, forward, backward, optimizer, between steps), for an error's record."""
    backbone: nn.Module
    batch: Batch
    scaler: torch.amp.GradScaler
    num_skipped_steps: int
    """fp16 steps whose backbone step the scaler skipped."""

    def __call__(self) -> float | torch.Tensor:
        """Run one step; its loss, as a number or left on the device."""

    def take_forward_times_s(self) -> list[float]:
        """The backbone's forward times since the last call."""


class StepClass(Protocol):
    """A step's class: builds the cell's step on this rank."""

    def __call__(self, cell: Cell, device: torch.device, rank: int) -> Step: ...


class Classifier(Protocol):
    """The rank's shard of the class centres, whatever the impl's forward looks like."""

    class_start: int
    """The first class of the shard."""
    num_local: int
    """Classes in the shard."""
    num_sample: int
    """Centres sampled each step below rate 1."""
    world_size: int

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


class MarginClassifier(Classifier, Protocol):
    """A train_v2 classifier (arcface_torch's PartialFC_V2, fused): built from the margin, the loss from
    the rank's embeddings and labels, trained by the step's SGD as the classifier says."""

    weight: nn.Parameter
    """The rank's shard of centres."""

    def __init__(
        self, margin_loss: nn.Module, embedding_size: int, num_classes: int, sample_rate: float,
        collectives: Collectives,
    ) -> None: ...  # fmt: skip

    def __call__(self, local_embeddings: torch.Tensor, local_labels: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: torch.device) -> MarginClassifier: ...

    def train(self, mode: bool = True) -> MarginClassifier: ...

    def optimizer_group(self, weight_decay: float) -> dict[str, Any]:
        """The centres' SGD parameter group, with the weight decay SGD is to apply to them."""

    def decay(self, weight_decay: float) -> None:
        """Apply what weight decay SGD does not, to the gradients, after they are unscaled and before SGD."""


@dataclass(frozen=True)
class PassResult:
    """What one pass of a classifier alone leaves; the embeddings' gradient is in their .grad."""

    loss: torch.Tensor
    centres: torch.Tensor
    """The centres the classifier computed logits for (at rate 1 the rank's shard)."""
    centres_grad: torch.Tensor
    """Their gradient."""


class ClassifierPass(Protocol):
    """One forward and backward of an impl's classifier alone, driven as its step drives it."""

    def __call__(
        self, cell: Cell, collectives: Collectives, local_embeddings: torch.Tensor, local_labels: torch.Tensor
    ) -> PassResult:
        """Build the cell's classifier on this rank (from the global random state) and run one pass."""


@dataclass(frozen=True, kw_only=True)
class ImplSpec:
    """One classifier implementation: the step that times it, its classifier, and what a step costs."""

    name: str
    """The impl's name in a cell (bench.impls.IMPLS)."""
    step: StepClass
    """The step class: step(cell, device, rank) builds it on this rank."""
    classifier: type[Classifier]
    """The classifier class the step builds (a MarginClassifier for the train_v2 impls)."""
    classifier_pass: ClassifierPass
    """One forward and backward of the classifier alone, for callers that compare or time classifiers."""
    cost: ImplCost
    """The numbers its step's cost depends on."""
    summary: str
    """The program it runs, in a line."""

    def step_cost(self, cell: Cell) -> StepCost:
        """FLOPs, bytes moved and collectives of one step of cell (a cell of this impl) on its rank 0."""
        if cell.impl != self.name:
            raise ValueError(f"the {self.name} spec cannot state the cost of a cell of impl {cell.impl}")
        return self.cost.step_cost(cell)
