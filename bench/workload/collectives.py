"""What a classifier exchanges with the other ranks, behind one object that is always there.

ProcessGroupCollectives runs the process group's collectives, with arcface_torch's autograd for
the embeddings' all-gather. EmulatedCollectives plays rank 0 of a job of many ranks alone
(bench.workload.emulation): what the other ranks would send is made up, what would go back to
them is dropped, and the all-reduces stay in the process group of one. The step picks one, once.
"""

from __future__ import annotations

import torch
from torch import distributed

from bench.config import Cell
from bench.workload.emulation import EmulatedPeers


class Collectives:
    """The collectives of a classifier on this rank; the all-reduces are the process group's."""

    @property
    def rank(self) -> int:
        raise NotImplementedError

    @property
    def world_size(self) -> int:
        raise NotImplementedError

    def all_reduce(self, tensor: torch.Tensor, op: distributed.ReduceOp) -> None:
        distributed.all_reduce(tensor, op)

    def gather_batch(
        self, local_embeddings: torch.Tensor, local_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank's embeddings (fp32, backward as arcface_torch's all-gather) and labels (N x 1)."""
        raise NotImplementedError

    def gather_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Every rank's labels in one flat long tensor, this rank's among them (no autograd)."""
        raise NotImplementedError

    def gather_features(self, features: torch.Tensor) -> torch.Tensor:
        """Every rank's features (values only, no autograd), rows in rank order."""
        raise NotImplementedError

    def scatter_gradient(self, total_grad: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """This rank's rows of the gathered features' gradient, summed over ranks where they are real."""
        raise NotImplementedError


class ProcessGroupCollectives(Collectives):
    """The default process group's collectives."""

    @property
    def rank(self) -> int:
        return distributed.get_rank()

    @property
    def world_size(self) -> int:
        return distributed.get_world_size()

    def gather_batch(
        self, local_embeddings: torch.Tensor, local_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        world_size = self.world_size
        local_labels = local_labels.view(-1).long()
        batch_size, embedding_size = local_embeddings.shape
        gathered = [torch.zeros(batch_size, embedding_size, device=local_embeddings.device) for _ in range(world_size)]
        gathered_labels = [torch.zeros_like(local_labels) for _ in range(world_size)]
        embeddings = torch.cat(AllGatherFunc.apply(local_embeddings.float(), *gathered))
        distributed.all_gather(gathered_labels, local_labels)
        return embeddings, torch.cat(gathered_labels).view(-1, 1)

    def gather_labels(self, labels: torch.Tensor) -> torch.Tensor:
        world_size = self.world_size
        total_labels = torch.zeros(labels.numel() * world_size, device=labels.device, dtype=torch.long)
        distributed.all_gather(list(total_labels.chunk(world_size)), labels)
        return total_labels

    def gather_features(self, features: torch.Tensor) -> torch.Tensor:
        world_size = self.world_size
        total = torch.zeros(features.size(0) * world_size, features.size(1), device=features.device)
        distributed.all_gather(list(total.chunk(world_size)), features)
        return total

    def scatter_gradient(self, total_grad: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        grad = torch.zeros_like(features)
        distributed.reduce_scatter(grad, list(total_grad.chunk(self.world_size)))
        return grad


PROCESS_GROUP = ProcessGroupCollectives()
"""The collectives of a real job (they read the process group when used)."""


class EmulatedCollectives(Collectives):
    """Rank 0 of cell.world_size ranks, alone: the other ranks' embeddings and labels are made up."""

    def __init__(self, cell: Cell, device: torch.device) -> None:
        self.peers = EmulatedPeers(cell, device)

    @property
    def rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return self.peers.world_size

    def gather_batch(
        self, local_embeddings: torch.Tensor, local_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        labels = self.peers.labels(local_labels).view(-1, 1)  # labels first, as the 2021 classifier
        return self.peers.embeddings(local_embeddings.float()), labels

    def gather_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return self.peers.labels(labels)

    def gather_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.peers.embeddings(features)

    def scatter_gradient(self, total_grad: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return total_grad[: features.size(0)]  # the other ranks' share is dropped


def collectives_for(cell: Cell, device: torch.device) -> Collectives:
    """The collectives of a cell's classifier: emulated for an emulated cell, else the process group's."""
    return EmulatedCollectives(cell, device) if cell.emulated else PROCESS_GROUP


class AllGatherFunc(torch.autograd.Function):
    """all_gather whose backward hands each rank the sum of all ranks' gradients times W.

    The factor W makes DDP's averaging over W ranks leave the backbone with the summed gradient.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, *gather_list: torch.Tensor) -> tuple[torch.Tensor, ...]:
        gather_list = list(gather_list)
        distributed.all_gather(gather_list, tensor)
        return tuple(gather_list)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_list = [g.contiguous() for g in grads]
        rank = distributed.get_rank()
        works = [
            distributed.reduce(grad_list[i], i, distributed.ReduceOp.SUM, async_op=True) for i in range(len(grad_list))
        ]
        for work in works:
            work.wait()
        grad_out = grad_list[rank] * len(grad_list)
        return (grad_out, *[None] * len(grad_list))
