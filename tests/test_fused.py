"""The fused classifier against arcface_torch's, number for number, on real 2-rank gloo groups."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bench.config import Cell
from bench.workload import FusedPartialFC, build_classifier
from bench.workload.fused import plan_chunks
from bench.workload.margin import CombinedMarginLoss
from bench.workload.partial_fc import shard_of
from bench.workload.step import TrainStep
from tests.ranks import run_ranks

WORLD_SIZE = 2
EMBEDDING = 256
PER_RANK_BATCH = 128
SEED = 7
COL_BYTES = 4 * (3 * WORLD_SIZE * PER_RANK_BATCH + 4 * EMBEDDING)
"""What plan_chunks counts per centre of a chunk."""
BUDGETS = {
    "default": None,
    "recomputed, 100 centres a chunk": 100 * COL_BYTES,
    "kept, 256 centres a chunk": 4 * WORLD_SIZE * PER_RANK_BATCH * 1002 + 256 * COL_BYTES,
}
"""Memory budgets of the fused classifier: one chunk kept, many chunks recomputed, many chunks kept."""
CASES = {
    "uniform labels, 2003 classes": (2003, "uniform", tuple(BUDGETS)),
    "rank 1 holds no positive": (2003, "rank 0 only", ("default",)),
    "41 classes": (41, "uniform", ("default",)),
}
"""Class count, where labels come from, and the budgets each case runs at."""


def full_weight(num_classes: int) -> torch.Tensor:
    """Every rank's initial shard, as each draws it from seed SEED + rank."""
    shards = []
    for rank in range(WORLD_SIZE):
        torch.manual_seed(SEED + rank)
        shards.append(torch.normal(0, 0.01, (shard_of(num_classes, WORLD_SIZE, rank)[1], EMBEDDING)))
    return torch.cat(shards)


def global_inputs(num_classes: int, labels_from: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings and labels of the global batch; rows 0-35 sit at cosine near or at +-1 to their target.

    Rows 0-3 are 3e-3 off their target centre (or its opposite); rows 4-35 are exact multiples of it,
    whose cosines round to either side of +-1, so that the clamp stops some of their gradient.
    """
    gen = torch.Generator().manual_seed(11)
    batch = WORLD_SIZE * PER_RANK_BATCH
    high = shard_of(num_classes, WORLD_SIZE, 0)[1] if labels_from == "rank 0 only" else num_classes
    labels = torch.randint(0, high, (batch,), generator=gen)
    embeddings = torch.randn(batch, EMBEDDING, generator=gen)
    centre = full_weight(num_classes)[labels]
    noise = 3e-3 * centre.norm(dim=1, keepdim=True) * torch.nn.functional.normalize(embeddings)
    sign = torch.tensor([1.0, -1.0] * 18)[:, None]
    embeddings[:4] = sign[:4] * (centre[:4] + noise[:4]) * 50
    embeddings[4:36] = sign[4:36] * centre[4:36] * 50
    return embeddings, labels


def build(impl: str, margin: str, num_classes: int, rate: float, budget: int | None) -> torch.nn.Module:
    torch.manual_seed(SEED + torch.distributed.get_rank())
    if impl == "fused" and budget is not None:
        return FusedPartialFC(CombinedMarginLoss.named(margin), EMBEDDING, num_classes, rate, budget_bytes=budget)
    return build_classifier(impl, margin, EMBEDDING, num_classes, rate)


def one_step(module: torch.nn.Module, embeddings: torch.Tensor, labels: torch.Tensor, step: int) -> dict:
    rank = torch.distributed.get_rank()
    rows = slice(rank * PER_RANK_BATCH, (rank + 1) * PER_RANK_BATCH)
    local = embeddings[rows].clone().requires_grad_()
    torch.manual_seed(1000 + step)  # the sampling draws from the global generator
    loss = module(local, labels[rows].clone())
    loss.backward()
    return {"loss": loss.detach(), "emb_grad": local.grad, "weight_grad": module.weight.grad.clone()}


def compare_on_ranks(rank, world_size, margin, rate, out):
    torch.set_num_threads(1)
    figures = {}
    for case, (num_classes, labels_from, budgets) in CASES.items():
        embeddings, labels = global_inputs(num_classes, labels_from)
        for budget_name in budgets:
            budget = BUDGETS[budget_name]
            results = {}
            for impl in ("arcface_torch", "fused"):
                module = build(impl, margin, num_classes, rate, budget)
                first = one_step(module, embeddings, labels, 0)
                initial = module.weight.detach().clone()
                index = None if rate == 1.0 else module.weight_index.clone()
                optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
                optimizer.step()
                for step in range(1, 5):
                    optimizer.zero_grad()
                    one_step(module, embeddings, labels, step)
                    optimizer.step()
                results[impl] = {**first, "initial": initial, "index": index, "after_5": module.weight.detach()}
            figures[(case, budget_name)] = results
    torch.save(figures, f"{out}/rank{rank}.pt")


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest elementwise difference, relative to the largest magnitude of the reference."""
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


@pytest.mark.slow
@pytest.mark.parametrize("rate", [1.0, 0.1])
@pytest.mark.parametrize("margin", ["arcface", "cosface"])
def test_fused_equals_arcface_torch(tmp_path, margin, rate):
    run_ranks(compare_on_ranks, WORLD_SIZE, margin, rate, str(tmp_path))
    for rank in range(WORLD_SIZE):
        figures = torch.load(tmp_path / f"rank{rank}.pt")
        for (case, budget), results in figures.items():
            want, got = results["arcface_torch"], results["fused"]
            where = f"rank {rank}, {case}, budget {budget}"
            assert torch.equal(got["initial"], want["initial"]), where
            if rate < 1.0:
                assert torch.equal(got["index"], want["index"]), where
            assert want["loss"] > 0, where
            for key in ("loss", "emb_grad", "weight_grad"):
                assert relative_error(got[key], want[key]) <= 1e-5, f"{key}: {where}"
            assert relative_error(got["after_5"], want["after_5"]) <= 1e-4, where
            if case == "rank 1 holds no positive" and rank == 1:
                assert want["weight_grad"].abs().sum() > 0, "a rank without positives still trains its negatives"


def test_inputs_reach_cosines_past_one_where_the_clamp_acts():
    embeddings, labels = global_inputs(2003, "uniform")
    cosine = torch.nn.functional.linear(
        torch.nn.functional.normalize(embeddings), torch.nn.functional.normalize(full_weight(2003))
    )[torch.arange(36), labels[:36]]
    assert (cosine[0:36:2] > 1 - 1e-4).all() and (cosine[1:36:2] < -1 + 1e-4).all()
    assert (cosine > 1).any() and (cosine < -1).any()


def test_budget_sets_the_chunk_and_whether_cosines_are_kept():
    mib = 2**20
    kept = plan_chunks(512, 100_000, 512, 256 * mib)
    assert kept.keep_cosines and kept.chunk_cols >= 256
    recomputed = plan_chunks(512, 1_000_000, 512, 256 * mib)
    assert not recomputed.keep_cosines
    col_bytes = 4 * (3 * 512 + 4 * 512)
    small = plan_chunks(512, 1_000_000, 512, 2 * mib)
    assert small.chunk_cols * col_bytes <= 2 * mib < (small.chunk_cols + 1) * col_bytes


def train_steps(rank, world_size, impl, out):
    """Five training steps of a classifier-only cell as `pfcbench cell` runs them; the centres after them."""
    torch.set_num_threads(1)
    cell = Cell(backbone="none", classes=2003, batch_size=64, nproc_per_node=WORLD_SIZE, device="cpu", impl=impl)
    step = TrainStep(cell, torch.device("cpu"), rank)
    losses = [step() for _ in range(5)]
    momentum = step.optimizer.state[step.partial_fc.weight]["momentum_buffer"]
    torch.save(
        {"losses": losses, "weight": step.partial_fc.weight.detach(), "momentum": momentum}, f"{out}/{impl}{rank}.pt"
    )


@pytest.mark.slow
def test_fused_training_step_updates_the_centres_as_arcface_torch(tmp_path):
    # fused's classifier adds the centres' weight decay into their gradient itself; arcface_torch's leaves it to SGD
    for impl in ("arcface_torch", "fused"):
        run_ranks(train_steps, WORLD_SIZE, impl, str(tmp_path))
    for rank in range(WORLD_SIZE):
        want, got = (torch.load(tmp_path / f"{impl}{rank}.pt") for impl in ("arcface_torch", "fused"))
        assert got["losses"] == pytest.approx(want["losses"], rel=1e-5)
        assert relative_error(got["weight"], want["weight"]) <= 1e-5
        assert relative_error(got["momentum"], want["momentum"]) <= 1e-5


def test_every_impl_name_resolves_to_its_step_and_classifier_and_the_names_need_no_torch():
    from bench.config import IMPLS
    from bench.impls import load_impl
    from bench.workload.base_step import BaseStep

    for name in IMPLS:
        impl = load_impl(name)
        assert impl.name == name and impl.summary, name
        assert issubclass(impl.step, BaseStep) and issubclass(impl.classifier, torch.nn.Module), name
    with pytest.raises(ValueError, match="impl must be one of"):
        load_impl("dense")
    probe = "import sys, bench.config, bench.impls; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
