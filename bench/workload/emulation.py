"""Rank 0 of a job of many ranks, run alone: what the other ranks would send it is synthesised.

The classifier of an emulated cell holds rank 0's class shard and is fed the batch of every
rank: this process's embeddings and labels, then the other ranks' made up here (random unit
embeddings, as the 2021 program gathers them normalised; labels drawn as SyntheticBatch draws
them). What would go back to the other ranks is dropped. The process group has one rank, so the
classifier's all-reduces stay local.
"""

from __future__ import annotations

import torch
from torch.nn.functional import normalize

from bench.config import Cell


class EmulatedPeers:
    """The other world_size - 1 ranks of an emulated cell, as rank 0's classifier sees them."""

    def __init__(self, cell: Cell, device: torch.device) -> None:
        self.world_size = cell.world_size
        self.classes = cell.classes
        self.constant_labels = cell.label_mode == "constant"
        self.device = device
        # a stream of its own, apart from rank 0's labels and the global state that sampling uses
        self.generator = torch.Generator(device=device).manual_seed(cell.seed * 1000 + cell.world_size)

    def num_rows(self, local: torch.Tensor) -> int:
        return local.size(0) * (self.world_size - 1)

    def labels(self, local_labels: torch.Tensor) -> torch.Tensor:
        """Every rank's labels, this rank's first: the others uniform over all classes, or the constant 1."""
        local_labels = local_labels.view(-1).long()
        shape = (self.num_rows(local_labels),)
        if self.constant_labels:
            others = torch.ones(shape, dtype=torch.long, device=self.device)
        else:
            others = torch.randint(0, self.classes, shape, generator=self.generator, device=self.device)
        return torch.cat([local_labels, others])

    def embeddings(self, local_embeddings: torch.Tensor) -> torch.Tensor:
        """Every rank's embeddings, this rank's first; backward hands this rank its rows' gradient times
        the world size, as arcface_torch's all-gather does (without the other ranks' share of it)."""
        shape = (self.num_rows(local_embeddings), local_embeddings.size(1))
        others = normalize(
            torch.randn(shape, generator=self.generator, device=self.device, dtype=local_embeddings.dtype)
        )
        return GatherFromPeers.apply(local_embeddings, others, self.world_size)


class GatherFromPeers(torch.autograd.Function):
    """torch.cat([local, others]) whose backward returns the local rows' gradient times world_size."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, others: torch.Tensor, world_size: int) -> torch.Tensor:
        ctx.num_local, ctx.world_size = local.size(0), world_size
        return torch.cat([local, others])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad[: ctx.num_local] * ctx.world_size, None, None
