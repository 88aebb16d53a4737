"""One forward and backward of an impl's classifier alone, as its step drives it, for any impl.

The classifiers keep the interfaces of the programs they reproduce (train_v2's module call, 2022's
optimizer handed to forward, 2021's manual backward), so each impl's spec holds the pass that drives
its own; a caller that compares or times the classifiers alone needs no branch on the impl.
"""

from __future__ import annotations

import torch
from torch.nn.functional import normalize

from bench.config import Cell
from bench.workload.collectives import Collectives
from bench.workload.impl import ClassifierPass, MarginClassifier, PassResult
from bench.workload.margin import CombinedMarginLoss
from bench.workload.partial_fc_2021 import PartialFC2021
from bench.workload.partial_fc_2022 import PartialFC2022
from bench.workload.synthetic import AUTOCAST_DTYPES


def margin_pass(classifier: type[MarginClassifier]) -> ClassifierPass:
    """train_v2's: the loss of the module call, and its backward."""

    def run(
        cell: Cell, collectives: Collectives, local_embeddings: torch.Tensor, local_labels: torch.Tensor
    ) -> PassResult:
        module = classifier(
            CombinedMarginLoss.named(cell.margin), cell.embedding_size, cell.classes, cell.sample_rate, collectives
        )
        loss = module(local_embeddings, local_labels)
        loss.backward()
        return PassResult(loss.detach(), module.weight.detach(), module.weight.grad)

    return run


def pass_2022(
    cell: Cell, collectives: Collectives, local_embeddings: torch.Tensor, local_labels: torch.Tensor
) -> PassResult:
    """January 2022's: forward swaps its sampled centres into the last group of the step's SGD."""
    module = PartialFC2022(
        cell.margin, cell.embedding_size, cell.classes, cell.sample_rate, AUTOCAST_DTYPES[cell.precision], collectives
    )
    backbone = torch.nn.Parameter(torch.zeros(1, device=local_embeddings.device))
    optimizer = torch.optim.SGD([{"params": [backbone]}, {"params": module.parameters()}], lr=0.1)
    loss = module(local_embeddings, local_labels, optimizer)
    loss.backward()
    return PassResult(loss.detach(), module.weight_activated.detach(), module.weight_activated.grad)


def pass_2021(
    cell: Cell, collectives: Collectives, local_embeddings: torch.Tensor, local_labels: torch.Tensor
) -> PassResult:
    """August 2021's: normalised features, the manual forward and backward, the features' gradient pushed back."""
    module = PartialFC2021(
        cell.margin, cell.embedding_size, cell.classes, cell.sample_rate, cell.per_gpu_batch, local_embeddings.device,
        collectives,
    )  # fmt: skip
    features = normalize(local_embeddings)
    optimizer = torch.optim.SGD([module.sub_weight], lr=0.1)
    forward = module.forward(local_labels, features, optimizer)
    features.backward(module.backward(forward, features))
    return PassResult(forward.loss, module.sub_weight.detach(), module.sub_weight.grad)
