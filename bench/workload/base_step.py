"""What every training step shares: torch's settings, the backbone in DDP, the scaler and the batch."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bench.config import Cell
from bench.impls import load_impl
from bench.workload.backbones import build_backbone
from bench.workload.collectives import Collectives, collectives_for
from bench.workload.device import Device, device_of
from bench.workload.faults import Faults
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
        self.rank_device: Device = device_of(device)
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
        self.faults = Faults(rank, device)
        self.forward_clock = self.rank_device.stopwatch()
        """Times each backbone forward (on CUDA by events, read once the device is synchronised)."""
        self.batch = make_batch(cell, device, rank)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's forward, timed: the local work of a step, which no collective evens out across ranks.

        On CUDA the time comes from events, read by take_forward_times_s after the device is synchronised.
        """
        with self.forward_clock.span():
            return self.faults.after_forward(self.backbone(images))

    def take_forward_times_s(self) -> list[float]:
        """The forward times since the last call, cleared; on CUDA call it with the device synchronised."""
        return self.forward_clock.take_s()

    def build_training(self) -> None:
        """Build the classifier and the optimizers."""
        raise NotImplementedError

    def make_scaler(self) -> torch.amp.GradScaler:
        """The fp16 loss scaler, disabled (a pass-through) for other precisions."""
        return torch.amp.GradScaler(self.rank_device.type, growth_interval=100, enabled=self.cell.fp16)

    def data_parallel(self, backbone: nn.Module, **options) -> nn.Module:
        """The backbone in DistributedDataParallel: the one place a step wraps it (the memory trace swaps it)."""
        device_ids = self.rank_device.ddp_device_ids
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


def make_batch(cell: Cell, device: torch.device, rank: int):
    """Where the step's batches come from: made on the device, or read from the cell's record files."""
    if cell.data == "records":
        from bench.workload.loader import RecBatch

        return RecBatch(cell, device, rank)
    return SyntheticBatch(cell, device, rank)


def build_step(cell: Cell, device: torch.device, rank: int) -> BaseStep:
    """The step of cell.impl, as the registry names it."""
    return load_impl(cell.impl).step(cell, device, rank)
