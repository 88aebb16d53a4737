"""Partial FC v1: the classifier of arcface_torch's August 2021 train.py, which made the published tables.

Each rank keeps its class centres and their momentum in a memory bank (plain tensors). Each step
copies the sampled rows into a fresh Parameter, hands it to the classifier's own SGD with the
matching momentum rows as its momentum buffer, and after the optimizer step writes both back, so
unsampled centres get neither momentum nor weight decay. At sample rate 1 the Parameter and the
momentum buffer are the bank itself.

Forward and backward are manual: the gathered embeddings are a leaf of their own, the margin runs
with autograd over the whole logit matrix (the true derivative through arccos and cos), the
softmax cross-entropy across ranks is computed without grad, and `logits.backward` takes its
gradient; the embeddings' gradient goes back to each rank by reduce_scatter, times the world size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import distributed
from torch.nn.functional import linear, normalize

from bench.workload.collectives import PROCESS_GROUP, Collectives
from bench.workload.device import Event, device_of
from bench.workload.partial_fc import sample_classes, shard_of

SCALE = 64.0


def arcface_2021(cosine: torch.Tensor, labels: torch.Tensor, m: float = 0.5, s: float = SCALE) -> torch.Tensor:
    """cos(arccos(cosine) + m on the targets) * s, in place and with autograd, as 2021's ArcFace.

    The margin goes through a dense rows-with-a-target x classes tensor; the in-place arccos and
    cos make autograd keep copies of the logit matrix for their backward.
    """
    index = torch.where(labels != -1)[0]
    m_hot = torch.zeros(index.size(0), cosine.size(1), device=cosine.device)
    m_hot.scatter_(1, labels[index, None], m)
    cosine.acos_()
    cosine[index] += m_hot
    return cosine.cos_().mul_(s)


def cosface_2021(cosine: torch.Tensor, labels: torch.Tensor, m: float = 0.4, s: float = SCALE) -> torch.Tensor:
    """(cosine - m on the targets) * s, with autograd, through a dense m_hot as 2021's CosFace."""
    index = torch.where(labels != -1)[0]
    m_hot = torch.zeros(index.size(0), cosine.size(1), device=cosine.device)
    m_hot.scatter_(1, labels[index, None], m)
    cosine[index] -= m_hot
    return cosine * s


MARGIN_FUNCTIONS_2021 = {"arcface": arcface_2021, "cosface": cosface_2021}


@dataclass
class Forward2021:
    """What 2021's forward_backward held until it returned.

    The backward needs the features, logits and gradient; the normalised centres and the one-hot
    are kept alive through it too, so that memory peaks where 2021's did.
    """

    total_features: torch.Tensor
    """Every rank's embeddings, gathered: a leaf whose grad the backward fills."""
    logits: torch.Tensor
    """Margin logits of the sampled centres, with their autograd graph."""
    logits_grad: torch.Tensor
    """(softmax - one_hot) / global batch."""
    loss: torch.Tensor
    """Mean over the global batch of -log(max(p_target, 1e-30)), on the device."""
    norm_weight: torch.Tensor
    """The normalised sampled centres (the GEMM's operand)."""
    one_hot: torch.Tensor
    """The dense one-hot of the rows with a target on this rank."""


class PartialFC2021(torch.nn.Module):
    """The rank's shard of class centres (`weight`) and their momentum (`weight_mom`), N(0, 0.01) and 0.

    `sub_weight` is the Parameter the classifier's optimizer holds: the sampled rows of this step.
    `collectives` exchanges with the other ranks, or makes them up (see PartialFC).
    """

    def __init__(
        self, margin: str, embedding_size: int, num_classes: int, sample_rate: float, batch_size: int,
        device: torch.device, collectives: Collectives = PROCESS_GROUP,
    ) -> None:  # fmt: skip
        super().__init__()
        if not distributed.is_initialized():
            raise RuntimeError("PartialFC2021 needs an initialised process group")
        self.collectives = collectives
        self.rank, self.world_size = collectives.rank, collectives.world_size
        self.margin_softmax = MARGIN_FUNCTIONS_2021[margin]
        self.embedding_size = embedding_size
        self.sample_rate = sample_rate
        self.batch_size = batch_size
        self.device = device
        self.class_start, self.num_local = shard_of(num_classes, self.world_size, self.rank)
        self.num_sample = int(sample_rate * self.num_local)
        with torch.no_grad():
            self.weight = torch.normal(0, 0.01, (self.num_local, embedding_size), device=device)
            self.weight_mom = torch.zeros_like(self.weight)
        self.rank_device = device_of(device)
        self.stream = self.rank_device.new_stream()
        """Where labels are gathered and centres sampled: a CUDA side stream, as in 2021."""
        self.index: torch.Tensor | None = None
        self.sampling = int(sample_rate) != 1
        if self.sampling:
            self.sub_weight = torch.nn.Parameter(torch.empty((0, 0), device=device))
        else:
            self.sub_weight = torch.nn.Parameter(self.weight)
            self.sub_weight_mom = self.weight_mom

    @torch.no_grad()
    def sample(self, total_labels: torch.Tensor) -> None:
        """Relabel to local classes (-1 elsewhere); below rate 1, sample positives + random negatives."""
        index_positive = (self.class_start <= total_labels) & (total_labels < self.class_start + self.num_local)
        total_labels[~index_positive] = -1
        total_labels[index_positive] -= self.class_start
        if not self.sampling:
            return
        self.index = sample_classes(total_labels, index_positive, self.num_local, self.num_sample)
        self.sub_weight = torch.nn.Parameter(self.weight[self.index])
        self.sub_weight_mom = self.weight_mom[self.index]

    def prepare(
        self, labels: torch.Tensor, optimizer: torch.optim.Optimizer, ready: Event | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather the labels, sample, swap the sampled Parameter and its momentum into the optimizer.

        Returns the relabelled global labels and the normalised sampled centres. On CUDA the work
        runs on the side stream once `ready` (recorded after the labels were made) has passed.
        """
        with self.rank_device.use_stream(self.stream):
            if ready is not None:
                self.stream.wait_event(ready)
            total_labels = self.collectives.gather_labels(labels)
            self.sample(total_labels)
            group = optimizer.param_groups[-1]
            optimizer.state.pop(group["params"][0], None)
            group["params"][0] = self.sub_weight
            optimizer.state[self.sub_weight]["momentum_buffer"] = self.sub_weight_mom
            return total_labels, normalize(self.sub_weight)

    def forward(
        self, labels: torch.Tensor, features: torch.Tensor, optimizer: torch.optim.Optimizer,
        ready: Event | None = None,
    ) -> Forward2021:  # fmt: skip
        """Logits, margin, and the loss and logits' gradient of the softmax cross-entropy across ranks."""
        total_labels, norm_weight = self.prepare(labels, optimizer, ready)
        total_features = self.collectives.gather_features(features.data)
        total_features.requires_grad = True
        self.rank_device.current_stream().wait_stream(self.stream)
        logits = self.margin_softmax(linear(total_features, norm_weight), total_labels)
        logits_grad, loss, one_hot = self.softmax_cross_entropy(logits, total_labels)
        return Forward2021(total_features, logits, logits_grad, loss, norm_weight, one_hot)

    @torch.no_grad()
    def softmax_cross_entropy(self, logits: torch.Tensor, total_labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(softmax - one_hot) / global batch, the loss, and the one-hot; the max and sums are all-reduced."""
        max_logits = torch.max(logits, dim=1, keepdim=True)[0]
        self.collectives.all_reduce(max_logits, distributed.ReduceOp.MAX)
        grad = torch.exp(logits - max_logits)
        sum_exp = grad.sum(dim=1, keepdim=True)
        self.collectives.all_reduce(sum_exp, distributed.ReduceOp.SUM)
        grad.div_(sum_exp)
        index = torch.where(total_labels != -1)[0]
        one_hot = torch.zeros(index.size(0), grad.size(1), device=grad.device)
        one_hot.scatter_(1, total_labels[index, None], 1)
        loss = torch.zeros(grad.size(0), 1, device=grad.device)
        loss[index] = grad[index].gather(1, total_labels[index, None])
        self.collectives.all_reduce(loss, distributed.ReduceOp.SUM)
        loss_value = loss.clamp_min_(1e-30).log_().mean() * (-1)
        grad[index] -= one_hot
        grad.div_(self.batch_size * self.world_size)
        return grad, loss_value, one_hot

    def backward(self, forward: Forward2021, features: torch.Tensor) -> torch.Tensor:
        """Backward through the margin and the GEMM; returns this rank's embeddings' gradient times W."""
        forward.logits.backward(forward.logits_grad)
        return self.collectives.scatter_gradient(forward.total_features.grad, features) * self.world_size

    @torch.no_grad()
    def update(self) -> None:
        """Write the sampled centres and their momentum back to the bank (at rate 1 they are the bank)."""
        if self.sampling:
            self.weight_mom[self.index] = self.sub_weight_mom
            self.weight[self.index] = self.sub_weight
