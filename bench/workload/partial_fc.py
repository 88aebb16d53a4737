"""Partial FC: the model-parallel classifier of arcface_torch (PartialFC_V2), step for step.

Class centres are split over the ranks in contiguous ranges. Each step gathers every rank's
embeddings and labels, optionally samples the positive centres plus random negatives, and
computes the softmax cross-entropy across ranks without ever gathering the logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import distributed
from torch.nn.functional import linear, normalize

from bench.workload.collectives import PROCESS_GROUP, Collectives
from bench.workload.sizes import shard_of


@torch.no_grad()
def sample_classes(labels: torch.Tensor, index_positive: torch.Tensor, num_local: int, num_sample: int) -> torch.Tensor:
    """arcface_torch's sampling (the same in every version): the sorted indices of every local positive
    class plus random negatives up to num_sample (only the positives if they are more); relabels the
    positives in place to their places among the sampled. Draws from the random generator as it does."""
    positive = torch.unique(labels[index_positive], sorted=True)
    if num_sample >= positive.size(0):
        perm = torch.rand(num_local, device=labels.device)
        perm[positive] = 2.0
        index = torch.topk(perm, k=num_sample)[1].sort()[0]
    else:
        index = positive
    labels[index_positive] = torch.searchsorted(index, labels[index_positive])
    return index


class PartialFC(torch.nn.Module):
    """arcface_torch's PartialFC_V2: forward(local_embeddings, local_labels) returns the loss.

    The rank's shard of class centres is `weight`, shape (num_local, embedding_size), N(0, 0.01).
    The GEMM, softmax and loss run in fp32 whatever precision the backbone uses, as train_v2
    builds PartialFC_V2 with fp16 off. `collectives` exchanges the batch with the other ranks (or
    makes them up, for an emulated cell).
    """

    def __init__(
        self,
        margin_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        embedding_size: int,
        num_classes: int,
        sample_rate: float = 1.0,
        collectives: Collectives = PROCESS_GROUP,
    ) -> None:
        super().__init__()
        if not distributed.is_initialized():
            raise RuntimeError("PartialFC needs an initialised process group")
        self.collectives = collectives
        self.rank, self.world_size = collectives.rank, collectives.world_size
        self.embedding_size = embedding_size
        self.sample_rate = sample_rate
        self.class_start, self.num_local = shard_of(num_classes, self.world_size, self.rank)
        self.num_sample = int(sample_rate * self.num_local)
        self.margin_softmax = margin_loss
        self.weight = torch.nn.Parameter(torch.normal(0, 0.01, (self.num_local, embedding_size)))
        self.weight_index: torch.Tensor | None = None

    def optimizer_group(self, weight_decay: float) -> dict[str, Any]:
        """The centres' SGD parameter group: SGD decays them, as train_v2 builds it."""
        return {"params": self.parameters(), "weight_decay": weight_decay}

    def decay(self, weight_decay: float) -> None:
        """Nothing to do before SGD: it applies the weight decay itself."""

    def sample(self, labels: torch.Tensor, index_positive: torch.Tensor) -> torch.Tensor:
        """Indices of every local positive plus random negatives, up to num_sample; relabel in place."""
        self.weight_index = sample_classes(labels, index_positive, self.num_local, self.num_sample)
        return self.weight_index

    def forward(self, local_embeddings: torch.Tensor, local_labels: torch.Tensor) -> torch.Tensor:
        embeddings, labels = self.gather(local_embeddings, local_labels)
        index_positive = labels != -1
        index = self.sample(labels, index_positive) if self.sample_rate < 1 else None
        return self.loss(embeddings, labels, index)

    def gather(self, local_embeddings: torch.Tensor, local_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank's embeddings (with a gradient path back) and labels, made local: -1 elsewhere."""
        embeddings, labels = self.collectives.gather_batch(local_embeddings, local_labels)
        index_positive = (self.class_start <= labels) & (labels < self.class_start + self.num_local)
        labels[~index_positive] = -1
        labels[index_positive] -= self.class_start
        return embeddings, labels

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """The loss over the centres `index` (all when None) for local labels (-1: held elsewhere)."""
        weight = self.weight if index is None else self.weight[index]
        logits = linear(normalize(embeddings), normalize(weight)).clamp(-1, 1)
        logits = self.margin_softmax(logits, labels)
        return DistCrossEntropyFunc.apply(logits, labels, self.collectives)


class DistCrossEntropyFunc(torch.autograd.Function):
    """Softmax cross-entropy over logits split by columns across ranks.

    The value is the mean of -log(max(p_target, 1e-30)); the gradient is that of the plain mean
    softmax cross-entropy, (softmax - one_hot) / batch, as in arcface_torch.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, label: torch.Tensor, collectives: Collectives) -> torch.Tensor:
        batch_size = logits.size(0)
        max_logits, _ = torch.max(logits, dim=1, keepdim=True)
        collectives.all_reduce(max_logits, distributed.ReduceOp.MAX)
        logits.sub_(max_logits)
        logits.exp_()
        sum_logits_exp = torch.sum(logits, dim=1, keepdim=True)
        collectives.all_reduce(sum_logits_exp, distributed.ReduceOp.SUM)
        logits.div_(sum_logits_exp)
        index = torch.where(label != -1)[0]
        loss = torch.zeros(batch_size, 1, device=logits.device)
        loss[index] = logits[index].gather(1, label[index])
        collectives.all_reduce(loss, distributed.ReduceOp.SUM)
        ctx.save_for_backward(index, logits, label)
        return loss.clamp_min_(1e-30).log_().mean() * (-1)

    @staticmethod
    def backward(ctx, loss_gradient: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        index, logits, label = ctx.saved_tensors
        batch_size = logits.size(0)
        one_hot = torch.zeros(index.size(0), logits.size(1), device=logits.device)
        one_hot.scatter_(1, label[index], 1)
        logits[index] -= one_hot
        logits.div_(batch_size)
        return logits * loss_gradient.item(), None, None
