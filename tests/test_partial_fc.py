"""Partial FC against a dense single-process computation, on real 2-rank gloo groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.workload import CombinedMarginLoss, PartialFC
from bench.workload.margin import MARGINS
from bench.workload.partial_fc import shard_of
from tests.ranks import run_ranks

EMBEDDING = 16
PER_RANK_BATCH = 6


def global_inputs(world_size: int, num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(world_size * PER_RANK_BATCH, EMBEDDING, generator=gen, dtype=torch.float64).float()
    labels = torch.randint(0, num_classes, (world_size * PER_RANK_BATCH,), generator=gen)
    return embeddings, labels


def dense_loss(embeddings: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, margin: str) -> torch.Tensor:
    """The reference: one process, all classes, arcface_torch's three conventions spelled out."""
    cosine = (F.normalize(embeddings) @ F.normalize(weight).T).clamp(-1, 1)
    rows = torch.arange(len(labels))
    with torch.no_grad():
        target = cosine.detach().clone()
        if margin == "arcface":
            target[rows, labels] = torch.cos(torch.arccos(target[rows, labels]) + 0.5)
    if margin == "arcface":
        # straight-through: the value has the margin, the gradient is that of s * cos(theta)
        logits = 64 * (cosine + (target - cosine).detach())
    else:
        logits = 64 * (cosine - 0.4 * F.one_hot(labels, weight.size(0)))
    p_target = logits.softmax(dim=1)[rows, labels]
    clamped_value = -torch.log(p_target.clamp_min(1e-30)).mean()
    plain = F.cross_entropy(logits, labels)
    return plain + (clamped_value - plain).detach()


def check_dense(rank: int, world_size: int, num_classes: int, margin: str, out: str) -> None:
    torch.manual_seed(100 + rank)
    embeddings, labels = global_inputs(world_size, num_classes)
    rows = slice(rank * PER_RANK_BATCH, (rank + 1) * PER_RANK_BATCH)
    local = embeddings[rows].clone().requires_grad_()
    module = PartialFC(CombinedMarginLoss.named(margin), EMBEDDING, num_classes, sample_rate=1.0)
    loss = module(local, labels[rows].clone())
    loss.backward()
    torch.save(
        {
            "loss": loss.detach(),
            "emb_grad": local.grad,
            "weight": module.weight.detach(),
            "weight_grad": module.weight.grad,
        },
        f"{out}/rank{rank}.pt",
    )


@pytest.mark.slow
@pytest.mark.parametrize("margin", ["arcface", "cosface"])
def test_sample_rate_one_equals_dense(tmp_path, margin):
    world_size, num_classes = 2, 37
    run_ranks(check_dense, world_size, num_classes, margin, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]
    weight = torch.cat([r["weight"] for r in ranks]).requires_grad_()
    embeddings, labels = global_inputs(world_size, num_classes)
    embeddings.requires_grad_()
    loss = dense_loss(embeddings, weight, labels, margin)
    loss.backward()

    for rank, got in enumerate(ranks):
        start, count = shard_of(num_classes, world_size, rank)
        rows = slice(rank * PER_RANK_BATCH, (rank + 1) * PER_RANK_BATCH)
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-4, atol=0)
        # the all-gather's backward sums over ranks and multiplies by W for DDP's averaging
        torch.testing.assert_close(got["emb_grad"], world_size * embeddings.grad[rows], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(got["weight_grad"], weight.grad[start : start + count], rtol=1e-4, atol=1e-7)


class RecordingMargin(CombinedMarginLoss):
    """ArcFace that keeps the labels it was handed (the relabelled targets)."""

    def forward(self, logits, labels):
        self.seen_labels = labels.clone()
        return super().forward(logits, labels)


def check_sampled(rank: int, world_size: int, num_classes: int, rate: float, out: str) -> None:
    torch.manual_seed(200 + rank)
    embeddings, labels = global_inputs(world_size, num_classes, seed=3)
    rows = slice(rank * PER_RANK_BATCH, (rank + 1) * PER_RANK_BATCH)
    margin = RecordingMargin(64.0, *MARGINS["arcface"])
    module = PartialFC(margin, EMBEDDING, num_classes, sample_rate=rate)
    loss = module(embeddings[rows].clone().requires_grad_(), labels[rows].clone())
    torch.save(
        {
            "loss": loss.detach(),
            "index": module.weight_index,
            "relabelled": margin.seen_labels.view(-1),
            "weight": module.weight.detach(),
            "num_local": module.num_local,
        },
        f"{out}/rank{rank}.pt",
    )


@pytest.mark.slow
@pytest.mark.parametrize(("num_classes", "rate"), [(2001, 0.1), (41, 0.1)])
def test_sampling_keeps_positives_and_relabels(tmp_path, num_classes, rate):
    world_size = 2
    run_ranks(check_sampled, world_size, num_classes, rate, str(tmp_path))
    embeddings, labels = global_inputs(world_size, num_classes, seed=3)
    sampled_classes = []
    for rank in range(world_size):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        start, count = shard_of(num_classes, world_size, rank)
        local_positives = sorted({int(c) - start for c in labels if start <= c < start + count})
        index = got["index"].tolist()
        assert set(local_positives) <= set(index)
        assert index == sorted(set(index))
        assert len(index) == max(int(rate * count), len(local_positives))
        for label, relabelled in zip(labels.tolist(), got["relabelled"].tolist()):
            if start <= label < start + count:
                assert index[relabelled] == label - start
            else:
                assert relabelled == -1
        sampled_classes += [start + i for i in index]
        weights = got["weight"]
        if rank == 0:
            sampled_weight = [weights[index]]
        else:
            sampled_weight.append(weights[index])
    # the loss equals a dense computation over the union of the sampled centres
    remap = {c: i for i, c in enumerate(sampled_classes)}
    dense_labels = torch.tensor([remap[int(c)] for c in labels])
    expected = dense_loss(embeddings, torch.cat(sampled_weight), dense_labels, "arcface")
    torch.testing.assert_close(got["loss"], expected.detach(), rtol=1e-4, atol=0)


@pytest.mark.parametrize("world_size", [1, 2, 3, 7, 8])
@pytest.mark.parametrize("num_classes", [8, 37, 1000, 2_000_003])
def test_every_class_belongs_to_exactly_one_rank(world_size, num_classes):
    owners = []
    for rank in range(world_size):
        start, count = shard_of(num_classes, world_size, rank)
        owners.append(range(start, start + count))
    assert [c for r in owners for c in r][:50] == list(range(min(50, num_classes)))
    assert sum(len(r) for r in owners) == num_classes
    assert all(a.stop == b.start for a, b in zip(owners, owners[1:]))
    assert owners[-1].stop == num_classes
