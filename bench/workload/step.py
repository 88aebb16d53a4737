"""One training step of arcface_torch's train_v2.py on this rank, with the cell's classifier."""

from __future__ import annotations

import torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import bf16_compress_hook, fp16_compress_hook

from bench.workload.base_step import WEIGHT_DECAY, BaseStep
from bench.workload.impl import MarginClassifier
from bench.workload.margin import CombinedMarginLoss


class TrainStep(BaseStep):
    """DDP backbone + Partial FC (the impl's classifier) + SGD on synthetic data.

    The classifier says how SGD decays its centres (optimizer_group) and applies what SGD does not
    (decay), between the gradients' unscaling and the optimizer step.
    """

    ddp_options = {"bucket_cap_mb": 16, "find_unused_parameters": True, "static_graph": True}

    def build_training(self) -> None:
        cell = self.cell
        # arcface_torch compresses gradients to fp16; a bf16 cell compresses them to bf16 instead.
        self.backbone.register_comm_hook(None, bf16_compress_hook if cell.precision == "bf16" else fp16_compress_hook)
        classifier: MarginClassifier = self.impl.classifier(
            CombinedMarginLoss.named(cell.margin), cell.embedding_size, cell.classes, cell.sample_rate, self.collectives
        )
        self.partial_fc = classifier.to(self.device).train()
        self.optimizer = torch.optim.SGD(
            [{"params": self.backbone.parameters()}, self.partial_fc.optimizer_group(WEIGHT_DECAY)],
            lr=0.1,
            momentum=0.9,
            weight_decay=WEIGHT_DECAY,
        )

    def __call__(self) -> float:
        """Run one step and return its loss."""
        self.phase = "data"
        images, labels = self.batch.next()
        self.phase = "forward"
        embeddings = self.embed(images)
        loss = self.partial_fc(embeddings, labels)
        self.phase = "backward"
        self.scaler.scale(loss).backward()
        self.step_backbone(self.optimizer)
        self.optimizer.zero_grad()
        self.phase = "between steps"
        return loss.item()

    def before_optimizer_step(self) -> None:
        self.partial_fc.decay(WEIGHT_DECAY)
