"""What every training step shares: torch's settings, the backbone in DDP, the scaler and the batch."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bench.config import Cell
from bench.impls import load_impl
from bench.workload.backbones import build_backbone
from bench.workload.collectives import Collectives, collectives_for
from bench.workload.synthetic import AUTOCAST_DTYPES, SyntheticBatch, configure_torch, memory_format

MAX_GRAD_NORM = 5.0
"""The backbone's gradient is clipped to this norm, in every arcface_torch program."""
WEIGHT_DECAY = 5e-4
"""SGD weight decay of backbone and classifier, in every arcface_torch program."""


class BaseStep:
    """A cell's step on this rank; `phase` says where it is, `scaler` is off unless the cell is fp16.

    Subclasses build their classifier and optimizers in build_training (between the backbone and
    the batch, so that the seeded draws come in the order of arcface_torch's programs) and run the
    step in __call__.
    """

    ddp_options: dict = {}
    """Keyword arguments of the backbone's DistributedDataParallel beyond the device."""

    def __init__(self, cell: Cell, device: torch.device, rank: int) -> None:
        self.cell = cell
        self.device = device
        self.phase = "setup"
        self.impl = load_impl(cell.impl)
        configure_torch(cell, rank)
        backbone = build_backbone(cell.backbone, cell.embedding_size, AUTOCAST_DTYPES[cell.precision])
        backbone = backbone.to(device=device, memory_format=memory_format(cell)).train()
        self.backbone = self.data_parallel(backbone, **self.ddp_options)
        self.collectives: Collectives = collectives_for(cell, device)
        self.build_training()
        self.scaler = self.make_scaler()
        self.num_skipped_steps = 0
        """fp16 steps whose backbone step the scaler skipped (inf or nan gradients)."""
        self.batch = SyntheticBatch(cell, device, rank)

    def build_training(self) -> None:
        """Build the classifier and the optimizers."""
        raise NotImplementedError

    def make_scaler(self) -> torch.amp.GradScaler:
        """The fp16 loss scaler, disabled (a pass-through) for other precisions."""
        return torch.amp.GradScaler(self.device.type, growth_interval=100, enabled=self.cell.fp16)

    def data_parallel(self, backbone: nn.Module, **options) -> nn.Module:
        """The backbone in DistributedDataParallel: the one place a step wraps it (the memory trace swaps it)."""
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(backbone, device_ids=device_ids, broadcast_buffers=False, **options)

    def step_backbone(self, optimizer: torch.optim.Optimizer) -> None:
        """Unscale, clip and step the optimizer that holds the backbone; count the steps the scaler skips."""
        self.phase = "optimizer"
        self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(self.backbone.parameters(), MAX_GRAD_NORM)
        scale_before = self.scaler.get_scale()
        self.before_optimizer_step()
        self.scaler.step(optimizer)
        self.scaler.update()
        self.num_skipped_steps += self.scaler.get_scale() < scale_before  # the scaler backs off on a skip

    def before_optimizer_step(self) -> None:
        """Work on the gradients between clipping and the optimizer step; none by default."""


def build_step(cell: Cell, device: torch.device, rank: int) -> BaseStep:
    """The step of cell.impl, as the registry names it."""
    return load_impl(cell.impl).step(cell, device, rank)
