"""One training step for a cell on this rank: the cell's impl chooses which program it runs."""

from __future__ import annotations

import torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import bf16_compress_hook, fp16_compress_hook
from torch.nn.parallel import DistributedDataParallel

from bench.config import Cell
from bench.workload.backbones import build_backbone
from bench.workload.classifiers import build_classifier
from bench.workload.emulation import EmulatedPeers
from bench.workload.step_2021 import TrainStep2021
from bench.workload.synthetic import AUTOCAST_DTYPES, SyntheticBatch, configure_torch, memory_format

WEIGHT_DECAY = 5e-4


class TrainStep:
    """DDP backbone + Partial FC + SGD on synthetic data; `phase` says where a step is."""

    def __init__(self, cell: Cell, device: torch.device, rank: int) -> None:
        self.cell = cell
        self.phase = "setup"
        configure_torch(cell, rank)

        backbone = build_backbone(cell.backbone, cell.embedding_size, AUTOCAST_DTYPES[cell.precision])
        backbone = backbone.to(device=device, memory_format=memory_format(cell)).train()
        self.backbone = DistributedDataParallel(
            backbone,
            device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,
            bucket_cap_mb=16,
            find_unused_parameters=True,
            static_graph=True,
        )
        # arcface_torch compresses gradients to fp16; a bf16 cell compresses them to bf16 instead.
        self.backbone.register_comm_hook(None, bf16_compress_hook if cell.precision == "bf16" else fp16_compress_hook)
        peers = EmulatedPeers(cell, device) if cell.emulated else None
        self.partial_fc = build_classifier(
            cell.impl, cell.margin, cell.embedding_size, cell.classes, cell.sample_rate, peers
        )
        self.partial_fc = self.partial_fc.to(device).train()
        # fused adds the centres' weight decay into their gradient in place (decay_centres): the same
        # update without the shard-sized copy of the gradient that SGD's weight decay makes
        self.decays_centres = cell.impl == "fused"
        self.optimizer = torch.optim.SGD(
            [
                {"params": self.backbone.parameters()},
                {"params": self.partial_fc.parameters(), "weight_decay": 0.0 if self.decays_centres else WEIGHT_DECAY},
            ],
            lr=0.1,
            momentum=0.9,
            weight_decay=WEIGHT_DECAY,
        )
        self.scaler = torch.amp.GradScaler(device.type, growth_interval=100) if cell.fp16 else None
        self.num_skipped_steps = 0
        """fp16 steps whose optimizer step GradScaler skipped (inf or nan gradients)."""
        self.batch = SyntheticBatch(cell, device, rank)
        self.device = device

    def __call__(self) -> float:
        """Run one step and return its loss."""
        labels = self.batch.labels()
        self.phase = "forward"
        embeddings = self.backbone(self.batch.images)
        loss = self.partial_fc(embeddings, labels)
        self.phase = "backward"
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.phase = "optimizer"
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.backbone.parameters(), 5)
            scale_before = self.scaler.get_scale()
            self.decay_centres()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.num_skipped_steps += self.scaler.get_scale() < scale_before  # GradScaler backs off on a skip
        else:
            loss.backward()
            self.phase = "optimizer"
            torch.nn.utils.clip_grad_norm_(self.backbone.parameters(), 5)
            self.decay_centres()
            self.optimizer.step()
        self.optimizer.zero_grad()
        self.phase = "between steps"
        return loss.item()

    @torch.no_grad()
    def decay_centres(self) -> None:
        """grad += weight_decay * weight for the centres, in place, where SGD does not (fused)."""
        if self.decays_centres:
            for param in self.partial_fc.parameters():
                if param.grad is not None:
                    param.grad.add_(param, alpha=WEIGHT_DECAY)


Step = TrainStep | TrainStep2021


def build_step(cell: Cell, device: torch.device, rank: int) -> Step:
    """The step of cell.impl: the 2021 train.py for arcface_torch_2021, else train_v2 with the impl's classifier."""
    if cell.impl == "arcface_torch_2021":
        return TrainStep2021(cell, device, rank)
    return TrainStep(cell, device, rank)
