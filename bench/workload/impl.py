"""What a registered impl is (bench.impls names them): the step that runs it and its classifier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Impl:
    """One classifier implementation and the training step that times it."""

    step: type[Any]
    """The step class: step(cell, device, rank) builds it on this rank."""
    classifier: type[nn.Module]
    """The classifier class the step builds."""
    decays_centres: bool = False
    """The step adds the centres' weight decay into their gradient in place instead of SGD (fused)."""
