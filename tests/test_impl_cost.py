"""What each impl says one step costs: its FLOPs against torch's count of a real step, its bytes and collectives."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from bench.config import IMPLS, Cell
from bench.impls import load_impl
from bench.rank.measure import flop_counter
from bench.workload import cost
from bench.workload.base_step import build_step
from bench.workload.collectives import EmulatedCollectives
from bench.workload.fused import FusedPartialFC
from bench.workload.margin import CombinedMarginLoss
from tests.ranks import run_ranks

TINY = {"backbone": "none", "classes": 4003, "batch_size": 32, "embedding_size": 64, "device": "cpu"}
"""A cell whose step runs in a moment on the CPU: rank 0 of 4, emulated, a batch of 8 of a global 32."""
FLOP_CASES = {
    "classifier alone": {},
    "sampled, cosface": {"classes": 40_000, "sample_rate": 0.5, "margin": "cosface"},
    "mbf backbone": {"backbone": "mbf", "batch_size": 8},
}
"""Cells (beside TINY) whose first step each impl runs under torch's FLOP counter."""
TOLERANCE = 0.03


def tiny_cell(impl: str, **fields) -> Cell:
    return Cell(**{**TINY, "nproc_per_node": 4, "emulated": True, "impl": impl, **fields})


def count_step_flops(rank: int, world_size: int, out: str) -> None:
    """torch's count of the first step of every impl and case, rank 0 of an emulated job in a group of one."""
    torch.set_num_threads(1)
    counted = {}
    for case, fields in FLOP_CASES.items():
        for impl in IMPLS:
            step = build_step(tiny_cell(impl, **fields), torch.device("cpu"), rank)
            with flop_counter() as counter:
                step()
            counted[case, impl] = counter.get_total_flops()
    torch.save(counted, out)


@pytest.mark.slow
def test_each_impl_states_the_flops_torch_counts_in_its_real_step(tmp_path):
    run_ranks(count_step_flops, 1, str(tmp_path / "flops.pt"))
    counted = torch.load(tmp_path / "flops.pt")
    for (case, impl), flops in counted.items():
        stated = load_impl(impl).step_cost(tiny_cell(impl, **FLOP_CASES[case]))
        assert stated.flops == pytest.approx(flops, rel=TOLERANCE), f"{case}, {impl}"
        if case == "mbf backbone":
            assert stated.backbone.flops > stated.classifier.flops > 0, impl


def count_fused_flops(rank: int, world_size: int, budget_bytes: int, out: str) -> None:
    """torch's count of one forward and backward of the fused classifier alone at a memory budget."""
    cell = tiny_cell("fused")
    module = FusedPartialFC(
        CombinedMarginLoss.named(cell.margin), cell.embedding_size, cell.classes, 1.0,
        EmulatedCollectives(cell, torch.device("cpu")), budget_bytes=budget_bytes,
    )  # fmt: skip
    local = torch.randn(cell.per_gpu_batch, cell.embedding_size, requires_grad=True)
    labels = torch.randint(0, cell.classes, (cell.per_gpu_batch,))
    with flop_counter() as counter:
        module(local, labels).backward()
    torch.save(counter.get_total_flops(), out)


@pytest.mark.slow
def test_fused_states_the_gemm_it_recomputes_when_the_cosines_do_not_fit_its_budget(tmp_path):
    cell = tiny_cell("fused")
    small = 64 * 4 * (3 * cell.batch_size + 4 * cell.embedding_size)  # 64 centres a chunk, nothing kept
    for budget_bytes, gemms in ((cost.FUSED.budget_bytes, 3), (small, 4)):
        run_ranks(count_fused_flops, 1, budget_bytes, str(tmp_path / "flops.pt"))
        stated = dataclasses.replace(cost.FUSED, budget_bytes=budget_bytes).classifier_cost(cell)
        assert stated.flops == pytest.approx(torch.load(tmp_path / "flops.pt"), rel=TOLERANCE)
        assert stated.flops == 2 * gemms * cell.batch_size * 1001 * cell.embedding_size  # rank 0 holds 1001


def stated(impl: str, **fields) -> cost.StepCost:
    return load_impl(impl).step_cost(Cell(**{"nproc_per_node": 8, "impl": impl, **fields}))


@pytest.mark.parametrize("impl", IMPLS)
def test_the_classifiers_bytes_grow_linearly_with_the_classes_per_rank(impl):
    one, two, three = (stated(impl, classes=n * 8 * 1_000_000).classifier for n in (1, 2, 3))
    assert three.num_bytes - two.num_bytes == pytest.approx(two.num_bytes - one.num_bytes)
    assert two.num_bytes - one.num_bytes > 0.9 * one.num_bytes  # the batch-sized part is small beside them
    assert three.flops == pytest.approx(3 * one.flops)
    assert three.collectives == one.collectives  # what goes between ranks does not depend on the classes


@pytest.mark.parametrize("impl", IMPLS)
def test_half_precision_halves_the_activations_and_nothing_else(impl):
    full = stated(impl, backbone="r50", precision="fp32")
    for precision in ("fp16", "bf16"):
        half = stated(impl, backbone="r50", precision=precision)
        assert half.backbone.bytes_moved["activations"] == full.backbone.bytes_moved["activations"] / 2
        assert half.backbone.bytes_moved["parameters"] == full.backbone.bytes_moved["parameters"]
        assert half.flops == full.flops and half.classifier == full.classifier


def test_an_r50_step_costs_what_the_mfu_figures_count():
    step = stated("arcface_torch", backbone="r50", classes=1000, batch_size=2 * 8)
    assert step.backbone.flops / 2 == pytest.approx(6 * 6.31e9, rel=0.01)  # two images a rank
    assert step.classifier.flops == 6 * 16 * 125 * 512  # the whole batch against the rank's 125 classes


def test_the_collectives_say_what_each_impl_exchanges():
    rows, dim = 512, 512
    for impl in IMPLS:
        kinds = {(c.kind, c.what): c for c in stated(impl, batch_size=rows).collectives}
        gathered = kinds.get(("all_gather", "embeddings")) or kinds[("all_gather", "features")]
        assert gathered.num_bytes == rows * dim * 4
        assert kinds[("all_gather", "labels")].num_bytes == rows * 8
        assert kinds[("all_reduce", "row max, sum of exp, target probability")].total_bytes == 3 * rows * 4
    # train_v2 compresses the backbone's gradient to 16 bits; the 2021 and 2022 programs all-reduce fp32
    v2, old = (stated(impl, backbone="r50").backbone.collectives[0] for impl in ("fused", "arcface_torch_2021"))
    assert v2.total_bytes == pytest.approx(old.total_bytes / 2, rel=0.01)
    # 2021 sends the embeddings' gradient back by one reduce-scatter, train_v2 by a reduce to each rank
    assert ("reduce_scatter", "features' gradient") in {
        (c.kind, c.what) for c in stated("arcface_torch_2021").collectives
    }
    reduce = next(c for c in stated("arcface_torch").collectives if c.kind == "reduce")
    assert reduce.calls == 8 and reduce.total_bytes == 512 * 512 * 4


def test_below_rate_one_the_banked_impls_step_only_the_sampled_centres():
    for impl in IMPLS:
        full, sampled = (stated(impl, classes=80_000_000, sample_rate=rate).classifier for rate in (1.0, 0.1))
        assert sampled.flops == pytest.approx(full.flops / 10, rel=0.01)
        ratio = sampled.bytes_moved["optimizer"] / full.bytes_moved["optimizer"]
        assert ratio == pytest.approx(0.1 if load_impl(impl).cost.banked else 1.0, rel=0.01), impl


def test_a_spec_states_only_its_own_impls_cost():
    with pytest.raises(ValueError, match="the fused spec cannot state the cost of a cell of impl arcface_torch"):
        load_impl("fused").step_cost(Cell(impl="arcface_torch"))


def test_the_parent_reads_each_impls_cost_without_torch():
    for impl in IMPLS:
        cell = Cell(impl=impl, backbone="r50", classes=100_000, nproc_per_node=8)
        assert cost.step_cost(cell) == load_impl(impl).step_cost(cell)
    probe = "import sys, bench.workload.cost; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
