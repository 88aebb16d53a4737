"""One training step of arcface_torch's train_v2, built for a cell on this rank."""

from __future__ import annotations

import torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import bf16_compress_hook, fp16_compress_hook
from torch.nn.parallel import DistributedDataParallel

from bench.config import Cell
from bench.workload.backbones import build_backbone
from bench.workload.classifiers import build_classifier

AUTOCAST_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
IMAGE_SIZE = 112


class TrainStep:
    """DDP backbone + Partial FC + SGD on synthetic data; `phase` says where a step is."""

    def __init__(self, cell: Cell, device: torch.device, rank: int) -> None:
        self.cell = cell
        self.phase = "setup"
        torch.backends.cuda.matmul.allow_tf32 = cell.tf32
        torch.backends.cudnn.allow_tf32 = cell.tf32
        torch.backends.cudnn.benchmark = True
        torch.manual_seed(cell.seed + rank)

        backbone = build_backbone(cell.backbone, cell.embedding_size, AUTOCAST_DTYPES[cell.precision])
        memory_format = torch.channels_last if cell.channels_last else torch.contiguous_format
        backbone = backbone.to(device=device, memory_format=memory_format).train()
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
        self.partial_fc = build_classifier(cell.impl, cell.margin, cell.embedding_size, cell.classes, cell.sample_rate)
        self.partial_fc = self.partial_fc.to(device).train()
        self.optimizer = torch.optim.SGD(
            [{"params": self.backbone.parameters()}, {"params": self.partial_fc.parameters()}],
            lr=0.1,
            momentum=0.9,
            weight_decay=5e-4,
        )
        self.scaler = torch.amp.GradScaler(device.type, growth_interval=100) if cell.fp16 else None
        self.num_skipped_steps = 0
        """fp16 steps whose optimizer step GradScaler skipped (inf or nan gradients)."""

        generator = torch.Generator(device=device).manual_seed(cell.seed * 1000 + rank)
        self.generator = generator
        pixels = torch.randint(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), generator=generator, device=device)
        image = (pixels.permute(2, 0, 1).float() / 255 - 0.5) / 0.5
        self.images = image.expand(cell.per_gpu_batch, -1, -1, -1).contiguous(memory_format=memory_format)
        self.device = device

    def labels(self) -> torch.Tensor:
        """Labels of this rank's batch: uniform over all classes, or arcface_torch's constant 1."""
        if self.cell.label_mode == "constant":
            return torch.ones(self.cell.per_gpu_batch, dtype=torch.long, device=self.device)
        return torch.randint(
            0, self.cell.classes, (self.cell.per_gpu_batch,), generator=self.generator, device=self.device
        )

    def __call__(self) -> float:
        """Run one step and return its loss."""
        labels = self.labels()
        self.phase = "forward"
        embeddings = self.backbone(self.images)
        loss = self.partial_fc(embeddings, labels)
        self.phase = "backward"
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.phase = "optimizer"
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.backbone.parameters(), 5)
            scale_before = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.num_skipped_steps += self.scaler.get_scale() < scale_before  # GradScaler backs off on a skip
        else:
            loss.backward()
            self.phase = "optimizer"
            torch.nn.utils.clip_grad_norm_(self.backbone.parameters(), 5)
            self.optimizer.step()
        self.optimizer.zero_grad()
        self.phase = "between steps"
        return loss.item()


def build_step(cell: Cell, device: torch.device, rank: int) -> TrainStep:
    """The step of cell.impl on this rank."""
    return TrainStep(cell, device, rank)
