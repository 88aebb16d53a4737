"""Partial FC of January 2022 (arcface_torch_2022) on real 2-rank gloo groups, against dense float64 math."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.workload.base_step import WEIGHT_DECAY
from bench.workload.partial_fc_2022 import PartialFC2022
from tests.test_partial_fc_2021 import MOMENTUM, assert_one_step, global_inputs, rows_of, run_against_dense

EMBEDDING = 16
LR = 0.1
"""January 2022's train.py: one SGD, lr 0.1 (momentum 0.9 and weight decay as in 2021)."""
MARGIN_M = {"arcface": 0.5, "cosface": 0.4}


def one_step_2022(rank: int, world_size: int, num_classes: int, margin: str, rate: float, out: str) -> None:
    """One step as January 2022's train.py runs it (one SGD, the classifier's group last), then the write-back."""
    torch.manual_seed(600 + rank)
    embeddings, labels = global_inputs(num_classes)
    local = embeddings[rows_of(rank)].clone().requires_grad_()
    module = PartialFC2022(margin, EMBEDDING, num_classes, rate, None)
    bank = module.weight if rate < 1 else module.weight_activated.data
    momentum = 10 * torch.randn_like(bank)  # the scale of a centre's gradient
    if rate < 1:
        module.weight_mom.copy_(momentum)
    backbone = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD(
        [{"params": [backbone]}, {"params": module.parameters()}], lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    if rate == 1:
        optimizer.state[module.weight_activated]["momentum_buffer"] = momentum.clone()
    weight_before = bank.clone()
    loss = module(local, labels[rows_of(rank)].clone(), optimizer)
    loss.backward()
    optimizer.step()
    bank_after_step = bank.clone()
    module.update()  # the next step's forward starts with it
    index = module.weight_index if rate < 1 else torch.arange(module.num_local)
    mom = module.weight_mom if rate < 1 else optimizer.state[module.weight_activated]["momentum_buffer"]
    weight = module.weight if rate < 1 else module.weight_activated.data
    torch.save(
        {
            "loss": loss.detach(),
            "emb_grad": local.grad,
            "index": index,
            "weight_before": weight_before,
            "mom_before": momentum,
            "bank_after_step": bank_after_step,
            "weight": weight.clone(),
            "mom": mom.clone(),
        },
        f"{out}/rank{rank}.pt",
    )


def dense_2022(embeddings: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, margin: str):
    """The reference in float64, one process: the margin on the target logits only, with autograd.

    ArcFace: cos(theta + m) where cos(theta) > cos(pi - m), else cos(theta) - m sin(pi - m).
    Returns the loss value (p_target clamped at 1e-30) and the embeddings' and centres' gradients.
    """
    embeddings = embeddings.double().requires_grad_()
    weight = weight.double().requires_grad_()
    cosine = (F.normalize(embeddings) @ F.normalize(weight).T).clamp(-1, 1)
    target = cosine.gather(1, labels[:, None])
    m = MARGIN_M[margin]
    if margin == "arcface":
        cos_theta_m = target * math.cos(m) - torch.sqrt(1 - target**2) * math.sin(m)
        final = torch.where(target > math.cos(math.pi - m), cos_theta_m, target - math.sin(math.pi - m) * m)
    else:
        final = target - m
    one_hot = F.one_hot(labels, weight.size(0)).bool()
    logits = 64 * torch.where(one_hot, final, cosine)
    F.cross_entropy(logits, labels).backward()
    p_target = logits.detach().softmax(dim=1).gather(1, labels[:, None])
    loss = -p_target.clamp_min(1e-30).log().mean()
    return loss, embeddings.grad, weight.grad


@pytest.mark.slow
@pytest.mark.parametrize("margin", ["arcface", "cosface"])
@pytest.mark.parametrize(("num_classes", "rate"), [(37, 1.0), (2001, 0.1)])
def test_one_step_equals_dense_2022_math(tmp_path, margin, num_classes, rate):
    ranks, (loss, emb_grad, weight_grad) = run_against_dense(
        tmp_path, one_step_2022, dense_2022, num_classes, margin, rate
    )

    assert_one_step(ranks, rate, LR, loss, emb_grad, weight_grad)
    if rate < 1:
        # the step trains a copy of the sampled rows; the bank takes them at the next forward
        assert all(torch.equal(got["bank_after_step"], got["weight_before"]) for got in ranks)
