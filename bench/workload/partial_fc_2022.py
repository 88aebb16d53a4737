"""Partial FC of arcface_torch's January 2022 train.py, the program that made the A30 and A100 tables.

insightface rewrote arcface_torch on 14 January 2022 (bb221e6e, merged as 6eb8cb3f seconds after
the A100 report, c01f3d48, and with the A30 report's figures). Its Partial FC keeps the memory
bank of 2021 (`weight` and `weight_mom` as buffers) but runs forward and backward with autograd:
each step first writes the last step's sampled centres and momentum back to the bank (skipping
the very first call), samples, swaps a fresh Parameter `weight_activated` and its momentum rows
into the last parameter group of the one SGD that also trains the backbone, and computes the
logits under autocast (fp16 when the backbone is fp16), then in fp32, clamped to [-1, 1]. The
margin changes only the target logits, with autograd through them; the softmax cross-entropy
across ranks is arcface_torch's DistCrossEntropyFunc. At sample rate 1 `weight_activated` is the
shard itself and there is no bank.

train.py at that commit builds PartialFC without a margin, so the 2022 tables were made with its
default, CosFace (and its ArcFace only ran after the fix of 21 January 2022, 2e2e8c97, which this
module follows).
"""

from __future__ import annotations

import math

import torch
from torch import distributed
from torch.nn.functional import linear, normalize

from bench.workload.base_step import WEIGHT_DECAY, BaseStep
from bench.workload.collectives import PROCESS_GROUP, Collectives
from bench.workload.partial_fc import DistCrossEntropyFunc, sample_classes, shard_of
from bench.workload.synthetic import AUTOCAST_DTYPES

SCALE = 64.0


class ArcFace2022(torch.nn.Module):
    """cos(theta + m) on the target logits where theta + m < pi, else cos(theta) - m sin(pi - m); times s."""

    def __init__(self, s: float = SCALE, margin: float = 0.5) -> None:
        super().__init__()
        self.scale = s
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.theta = math.cos(math.pi - margin)
        self.sinmm = math.sin(math.pi - margin) * margin

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        index = torch.where(labels != -1)[0]
        target_logit = logits[index, labels[index].view(-1)]
        sin_theta = torch.sqrt(1.0 - torch.pow(target_logit, 2))
        cos_theta_m = target_logit * self.cos_m - sin_theta * self.sin_m
        final_target_logit = torch.where(target_logit > self.theta, cos_theta_m, target_logit - self.sinmm)
        logits[index, labels[index].view(-1)] = final_target_logit
        return logits * self.scale


class CosFace2022(torch.nn.Module):
    """cos(theta) - m on the target logits; times s."""

    def __init__(self, s: float = SCALE, m: float = 0.4) -> None:
        super().__init__()
        self.s, self.m = s, m

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        index = torch.where(labels != -1)[0]
        target_logit = logits[index, labels[index].view(-1)]
        logits[index, labels[index].view(-1)] = target_logit - self.m
        return logits * self.s


MARGINS_2022 = {"arcface": ArcFace2022, "cosface": CosFace2022}


class PartialFC2022(torch.nn.Module):
    """The rank's shard of class centres, N(0, 0.01); forward(embeddings, labels, optimizer) returns the loss.

    Below sample rate 1 the shard and its momentum are the buffers `weight` and `weight_mom`, and
    `weight_activated` is this step's sampled rows; at rate 1 `weight_activated` is the shard.
    `autocast_dtype` is the logits' GEMM precision (None: fp32).
    """

    def __init__(
        self, margin: str, embedding_size: int, num_classes: int, sample_rate: float,
        autocast_dtype: torch.dtype | None, collectives: Collectives = PROCESS_GROUP,
    ) -> None:  # fmt: skip
        super().__init__()
        if not distributed.is_initialized():
            raise RuntimeError("PartialFC2022 needs an initialised process group")
        self.collectives = collectives
        self.rank, self.world_size = collectives.rank, collectives.world_size
        self.margin_softmax = MARGINS_2022[margin]()
        self.embedding_size = embedding_size
        self.sample_rate = sample_rate
        self.autocast_dtype = autocast_dtype
        self.class_start, self.num_local = shard_of(num_classes, self.world_size, self.rank)
        self.num_sample = int(sample_rate * self.num_local)
        self.init_weight_update = True
        if sample_rate < 1:
            self.register_buffer("weight", torch.normal(0, 0.01, (self.num_local, embedding_size)))
            self.register_buffer("weight_mom", torch.zeros_like(self.weight))
            self.weight_activated = torch.nn.Parameter(torch.empty(0, 0))
            self.weight_activated_mom = torch.empty(0, 0)
            self.weight_index = torch.empty(0, dtype=torch.long)
        else:
            self.weight_activated = torch.nn.Parameter(torch.normal(0, 0.01, (self.num_local, embedding_size)))

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, index_positive: torch.Tensor, optimizer: torch.optim.SGD) -> None:
        """Positives + random negatives up to num_sample; relabel in place; swap them into the optimizer."""
        self.weight_index = sample_classes(labels, index_positive, self.num_local, self.num_sample)
        self.weight_activated = torch.nn.Parameter(self.weight[self.weight_index])
        self.weight_activated_mom = self.weight_mom[self.weight_index]
        group = optimizer.param_groups[-1]
        optimizer.state.pop(group["params"][0], None)
        group["params"][0] = self.weight_activated
        optimizer.state[self.weight_activated]["momentum_buffer"] = self.weight_activated_mom

    @torch.no_grad()
    def update(self) -> None:
        """Write the last step's sampled centres and momentum back to the bank; nothing on the first call."""
        if self.init_weight_update:
            self.init_weight_update = False
            return
        if self.sample_rate < 1:
            self.weight[self.weight_index] = self.weight_activated
            self.weight_mom[self.weight_index] = self.weight_activated_mom

    def forward(
        self, local_embeddings: torch.Tensor, local_labels: torch.Tensor, optimizer: torch.optim.SGD
    ) -> torch.Tensor:
        self.update()
        embeddings, labels = self.collectives.gather_batch(local_embeddings, local_labels)
        index_positive = (self.class_start <= labels) & (labels < self.class_start + self.num_local)
        labels[~index_positive] = -1
        labels[index_positive] -= self.class_start
        if self.sample_rate < 1:
            self.sample(labels, index_positive, optimizer)
        device_type = embeddings.device.type
        with torch.autocast(device_type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            logits = linear(normalize(embeddings), normalize(self.weight_activated))
        logits = logits.float().clamp(-1, 1)
        logits = self.margin_softmax(logits, labels)
        return DistCrossEntropyFunc.apply(logits, labels, self.collectives)


class TrainStep2022(BaseStep):
    """DDP backbone (default settings) + Partial FC 2022 + one SGD, lr 0.1, as January 2022's train.py."""

    def build_training(self) -> None:
        cell = self.cell
        self.partial_fc = PartialFC2022(
            cell.margin, cell.embedding_size, cell.classes, cell.sample_rate, AUTOCAST_DTYPES[cell.precision],
            self.collectives,
        ).to(self.device)  # fmt: skip
        # the classifier's parameter must be the last group's first: sample() swaps it each step
        self.optimizer = torch.optim.SGD(
            [{"params": self.backbone.parameters()}, {"params": self.partial_fc.parameters()}],
            lr=0.1,
            momentum=0.9,
            weight_decay=WEIGHT_DECAY,
        )

    def __call__(self) -> torch.Tensor:
        """Run one step and return its loss, left on the device."""
        self.phase = "data"
        images, labels = self.batch.next()
        self.phase = "forward"
        embeddings = self.embed(images)
        loss = self.partial_fc(embeddings, labels, self.optimizer)
        self.phase = "backward"
        self.scaler.scale(loss).backward()
        self.step_backbone(self.optimizer)
        self.optimizer.zero_grad()
        self.phase = "between steps"
        return loss.detach()
