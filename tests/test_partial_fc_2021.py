"""Partial FC v1 (arcface_torch_2021) on real 2-rank gloo groups, against a dense single-process computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.workload import CombinedMarginLoss, PartialFC
from bench.workload.partial_fc import shard_of
from bench.workload.partial_fc_2021 import PartialFC2021
from bench.workload.step_2021 import MOMENTUM, WEIGHT_DECAY, MaxClipGradScaler, classifier_optimizer, learning_rate
from tests.ranks import run_ranks

EMBEDDING = 16
PER_RANK_BATCH = 6
WORLD_SIZE = 2
MARGIN_M = {"arcface": 0.5, "cosface": 0.4}


def global_inputs(num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw (unnormalised) embeddings and labels of the global batch."""
    gen = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(WORLD_SIZE * PER_RANK_BATCH, EMBEDDING, generator=gen)
    labels = torch.randint(0, num_classes, (WORLD_SIZE * PER_RANK_BATCH,), generator=gen)
    return embeddings, labels


def rows_of(rank: int) -> slice:
    return slice(rank * PER_RANK_BATCH, (rank + 1) * PER_RANK_BATCH)


def assert_relative(got: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> None:
    """|got - expected| <= rtol |expected| in the 2-norm (element-wise, fp32 sums cancel)."""
    error = float((got.double() - expected.double()).norm() / expected.double().norm())
    assert error <= rtol, f"relative error {error:.2e} > {rtol:.0e}"


def one_step_2021(rank: int, world_size: int, num_classes: int, margin: str, rate: float, out: str) -> None:
    """One classifier step as 2021's train.py runs it, from a non-zero momentum bank."""
    torch.manual_seed(300 + rank)
    embeddings, labels = global_inputs(num_classes)
    local = embeddings[rows_of(rank)].clone().requires_grad_()
    features = F.normalize(local)
    module = PartialFC2021(margin, EMBEDDING, num_classes, rate, PER_RANK_BATCH, torch.device("cpu"))
    module.weight_mom.copy_(10 * torch.randn_like(module.weight_mom))  # the scale of a centre's gradient
    weight_before, mom_before = module.weight.clone(), module.weight_mom.clone()
    optimizer = classifier_optimizer(module, WORLD_SIZE * PER_RANK_BATCH)
    forward = module.forward(labels[rows_of(rank)].clone(), features, optimizer)
    x_grad, loss = module.backward(forward, features), forward.loss
    features.backward(x_grad)
    optimizer.step()
    module.update()
    index = module.index if module.index is not None else torch.arange(module.num_local)
    torch.save(
        {
            "loss": loss,
            "emb_grad": local.grad,
            "index": index,
            "weight_before": weight_before,
            "mom_before": mom_before,
            "weight": module.weight,
            "mom": module.weight_mom,
        },
        f"{out}/rank{rank}.pt",
    )


def dense_2021(embeddings: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, margin: str):
    """The reference in float64, one process: 2021's math spelled out with plain autograd.

    The margin's gradient is the true one (through arccos and cos); the loss value clamps
    p_target at 1e-30 while the gradient is that of the plain mean cross-entropy.
    Returns the loss value and the embeddings' and centres' gradients.
    """
    embeddings = embeddings.double().requires_grad_()
    weight = weight.double().requires_grad_()
    cosine = F.normalize(embeddings) @ F.normalize(weight).T
    one_hot = F.one_hot(labels, weight.size(0)).double()
    m = MARGIN_M[margin]
    logits = 64 * (torch.cos(torch.arccos(cosine) + m * one_hot) if margin == "arcface" else cosine - m * one_hot)
    F.cross_entropy(logits, labels).backward()
    p_target = logits.detach().softmax(dim=1).gather(1, labels[:, None])
    loss = -p_target.clamp_min(1e-30).log().mean()
    return loss, embeddings.grad, weight.grad


def run_against_dense(tmp_path, one_step, dense, num_classes: int, margin: str, rate: float):
    """Run one_step on WORLD_SIZE gloo ranks and check that each sampled as arcface_torch does (every
    local positive, sorted, as many as the rate asks). Returns the ranks' saved results and dense's
    (loss, embeddings' gradient, centres' gradient) over the centres they sampled before the step."""
    run_ranks(one_step, WORLD_SIZE, num_classes, margin, rate, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    embeddings, labels = global_inputs(num_classes)
    sampled_classes = []
    for rank, got in enumerate(ranks):
        start, count = shard_of(num_classes, WORLD_SIZE, rank)
        index = got["index"].tolist()
        positives = {int(c) - start for c in labels if start <= c < start + count}
        assert positives <= set(index) and index == sorted(set(index))
        assert len(index) == (count if rate == 1.0 else max(int(rate * count), len(positives)))
        sampled_classes += [start + i for i in index]
    remap = {c: i for i, c in enumerate(sampled_classes)}
    sampled_weight = torch.cat([got["weight_before"][got["index"]] for got in ranks])
    return ranks, dense(embeddings, sampled_weight, torch.tensor([remap[int(c)] for c in labels]), margin)


def assert_one_step(ranks: list[dict], rate: float, lr: float, loss, emb_grad, weight_grad) -> None:
    """Each rank's loss is the dense one and its embeddings' gradient W times the dense one (the ranks'
    sum, for DDP's averaging over W); its sampled centres took one SGD step with momentum and weight
    decay on the dense gradient, and the rows it did not sample kept their weights and momentum."""
    offset = 0
    for rank, got in enumerate(ranks):
        assert_relative(got["loss"], loss)
        assert_relative(got["emb_grad"], WORLD_SIZE * emb_grad[rows_of(rank)])
        index = got["index"]
        w, mom = got["weight_before"][index].double(), got["mom_before"][index].double()
        mom_after = MOMENTUM * mom + weight_grad[offset : offset + len(index)] + WEIGHT_DECAY * w
        offset += len(index)
        assert_relative(got["mom"][index], mom_after)
        assert_relative(got["weight"][index] - got["weight_before"][index], -lr * mom_after)
        unsampled = torch.ones(len(got["weight"]), dtype=torch.bool)
        unsampled[index] = False
        assert unsampled.any() == (rate < 1.0)
        assert torch.equal(got["weight"][unsampled], got["weight_before"][unsampled])
        assert torch.equal(got["mom"][unsampled], got["mom_before"][unsampled])


@pytest.mark.slow
@pytest.mark.parametrize("margin", ["arcface", "cosface"])
@pytest.mark.parametrize(("num_classes", "rate"), [(37, 1.0), (2001, 0.1)])
def test_one_step_equals_dense_2021_math(tmp_path, margin, num_classes, rate):
    ranks, (loss, emb_grad, weight_grad) = run_against_dense(
        tmp_path, one_step_2021, dense_2021, num_classes, margin, rate
    )
    assert_one_step(ranks, rate, learning_rate(WORLD_SIZE * PER_RANK_BATCH), loss, emb_grad, weight_grad)


def both_impls(rank: int, world_size: int, num_classes: int, margin: str, rate: float, out: str) -> None:
    """The same centres, embeddings and labels through one step of each impl's classifier."""
    torch.manual_seed(400 + rank)
    embeddings, labels = global_inputs(num_classes, seed=1)
    lr = learning_rate(WORLD_SIZE * PER_RANK_BATCH)
    old = PartialFC2021(margin, EMBEDDING, num_classes, rate, PER_RANK_BATCH, torch.device("cpu"))
    new = PartialFC(CombinedMarginLoss.named(margin), EMBEDDING, num_classes, rate)
    with torch.no_grad():
        new.weight.copy_(old.weight)
    weight_before = old.weight.clone()

    local_old = embeddings[rows_of(rank)].clone().requires_grad_()
    features = F.normalize(local_old)
    optimizer_old = classifier_optimizer(old, WORLD_SIZE * PER_RANK_BATCH)
    torch.manual_seed(500 + rank)
    forward = old.forward(labels[rows_of(rank)].clone(), features, optimizer_old)
    x_grad, loss_old = old.backward(forward, features), forward.loss
    features.backward(x_grad)
    optimizer_old.step()
    old.update()

    local_new = embeddings[rows_of(rank)].clone().requires_grad_()
    optimizer_new = torch.optim.SGD(new.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    torch.manual_seed(500 + rank)
    loss_new = new(local_new, labels[rows_of(rank)].clone())
    loss_new.backward()
    optimizer_new.step()
    torch.save(
        {
            "loss": (loss_old, loss_new.detach()),
            "emb_grad": (local_old.grad, local_new.grad),
            "index": (old.index, new.weight_index),
            "weight": (old.weight, new.weight.detach()),
            "mom": (old.weight_mom, optimizer_new.state[new.weight]["momentum_buffer"]),
            "weight_before": weight_before,
        },
        f"{out}/rank{rank}.pt",
    )


@pytest.mark.slow
@pytest.mark.parametrize("margin", ["arcface", "cosface"])
def test_where_the_two_impls_differ_by_design(tmp_path, margin):
    """Same seed, same sampled centres, same loss; then two designed differences.

    ArcFace: 2021 differentiates through arccos and cos, today's code passes the gradient straight
    through the margin, so the embeddings' gradients differ (CosFace's agree). At rate 0.1 today's
    SGD decays every centre of the shard, 2021 leaves unsampled centres and momentum untouched.
    """
    num_classes, rate = 2001, 0.1
    run_ranks(both_impls, WORLD_SIZE, num_classes, margin, rate, str(tmp_path))
    lr = learning_rate(WORLD_SIZE * PER_RANK_BATCH)
    for rank in range(WORLD_SIZE):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        index_old, index_new = got["index"]
        assert torch.equal(index_old, index_new)
        assert_relative(*got["loss"], rtol=1e-6)
        grad_old, grad_new = got["emb_grad"]
        if margin == "arcface":
            assert (grad_old - grad_new).norm() > 0.05 * grad_new.norm()
        else:
            assert_relative(grad_old, grad_new)

        unsampled = torch.ones(len(got["weight_before"]), dtype=torch.bool)
        unsampled[index_old] = False
        before = got["weight_before"][unsampled]
        weight_old, weight_new = (w[unsampled] for w in got["weight"])
        mom_old, mom_new = (m[unsampled] for m in got["mom"])
        assert torch.equal(weight_old, before) and not mom_old.any()
        torch.testing.assert_close(weight_new, before * (1 - lr * WEIGHT_DECAY), rtol=1e-6, atol=0)
        assert not torch.equal(weight_new, before)
        torch.testing.assert_close(mom_new, WEIGHT_DECAY * before, rtol=1e-6, atol=0)


@pytest.mark.slow
def test_max_clip_grad_scaler_starts_at_the_batch_and_stops_growing_at_its_cap():
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scaler = MaxClipGradScaler("cpu", init_scale=4.0, max_scale=16.0, growth_interval=1)
    scales = []
    for _ in range(5):
        param.grad = scaler.scale(torch.ones(3))
        scales.append(scaler.get_scale())
        scaler.step(optimizer)
        scaler.update()
    assert scales == [4.0, 8.0, 16.0, 16.0, 16.0]
    param.grad = torch.full((3,), float("inf"))
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 8.0
