"""Emulated cells: rank 0 of an N-rank job, alone in one process (one gloo rank on the CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from bench.config import IMPLS, Cell
from bench.impls import load_impl
from bench.memory import GIB, predict_cells
from bench.workload.collectives import EmulatedCollectives
from bench.workload.partial_fc import shard_of
from tests.cli import pfcbench
from tests.ranks import run_ranks
from tests.sweeps import run_sweep, write_matrix

EMULATED_RANKS = 4
CLASSES = 1003
EMBEDDING = 32
PER_RANK_BATCH = 8


def emulated_step(impl: str, margin: str) -> dict:
    """One classifier forward and backward of rank 0 of EMULATED_RANKS, alone in a group of one."""
    cell = Cell(
        backbone="none", classes=CLASSES, batch_size=EMULATED_RANKS * PER_RANK_BATCH, embedding_size=EMBEDDING,
        margin=margin, impl=impl, device="cpu", nproc_per_node=EMULATED_RANKS, emulated=True,
    )  # fmt: skip
    peers = EmulatedCollectives(cell, torch.device("cpu"))
    gen = torch.Generator().manual_seed(3)
    local = torch.randn(PER_RANK_BATCH, EMBEDDING, generator=gen).requires_grad_()
    labels = torch.randint(0, CLASSES, (PER_RANK_BATCH,), generator=gen)
    torch.manual_seed(5)
    result = load_impl(impl).classifier_pass(cell, peers, local, labels)
    return {"loss": result.loss, "emb_grad": local.grad, "weight": result.centres, "weight_grad": result.centres_grad}


def every_emulated_step(rank: int, world_size: int, out: str) -> None:
    steps = {(impl, margin): emulated_step(impl, margin) for impl in IMPLS for margin in ("arcface", "cosface")}
    torch.save(steps, out)


@pytest.mark.slow
def test_the_emulated_classifier_holds_rank_0s_shard_and_sees_the_whole_job(tmp_path):
    run_ranks(every_emulated_step, 1, str(tmp_path / "steps.pt"))
    steps = torch.load(tmp_path / "steps.pt")
    _, num_local = shard_of(CLASSES, EMULATED_RANKS, 0)
    for margin in ("arcface", "cosface"):
        today, fused, old = (steps[impl, margin] for impl in ("arcface_torch", "fused", "arcface_torch_2021"))
        assert today["weight"].shape == (num_local, EMBEDDING) == today["weight_grad"].shape
        assert today["emb_grad"].shape == (PER_RANK_BATCH, EMBEDDING)
        assert torch.isfinite(today["loss"]) and today["emb_grad"].abs().sum() > 0
        # every centre of the shard is a negative of each of the job's 32 rows, so each gets a gradient
        assert bool((today["weight_grad"].abs().sum(dim=1) > 0).all())
        # the same synthesised peers reach the fused classifier: the same loss and gradients
        for key in ("loss", "emb_grad", "weight_grad"):
            error = (fused[key] - today[key]).norm() / today[key].norm()
            assert error < 1e-5, f"{margin} {key}"
        # and the 2021 classifier: the same shard and loss (its margin's gradient differs by design)
        assert torch.equal(old["weight"], today["weight"])
        assert torch.allclose(old["loss"], today["loss"], rtol=1e-5), margin
        # and January 2022's: the same shard and loss; CosFace's gradients too (ArcFace's margin has autograd)
        new = steps["arcface_torch_2022", margin]
        assert torch.equal(new["weight"].detach(), today["weight"])
        assert torch.allclose(new["loss"], today["loss"], rtol=1e-5), margin
        if margin == "cosface":
            for key in ("emb_grad", "weight_grad"):
                assert (new[key] - today[key]).norm() < 1e-5 * today[key].norm(), key


@pytest.mark.slow
def test_a_run_with_emulate_ranks_marks_every_figure_as_emulated(tmp_path):
    matrix = write_matrix(tmp_path, "16, 32")
    results = tmp_path / "results"
    run = run_sweep(matrix, results, "--emulate-ranks", "4")
    assert run.stderr.count("samples/s (emulated)") == 2, run.stderr
    assert "rank 0 of 4 ranks, emulated" in run.stderr
    records = [json.loads(line) for line in (results / "tiny" / "results.jsonl").read_text().splitlines()]
    assert [(r["status"], r["world_size"], r["per_gpu_batch"]) for r in records] == [("ok", 4, 4), ("ok", 4, 8)]

    report = pfcbench("report", str(results / "tiny"), "--output", str(tmp_path / "tiny.md"))
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "tiny.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| 16 ", "| 32 "))]
    assert len(rows) == 2 and all("(emulated)" in line for line in rows), text
    assert "(emulated): only rank 0 of the cell's ranks ran" in text

    plan = pfcbench("plan", str(matrix), "--results", str(results), "--emulate-ranks", "4", "--json")
    assert plan.returncode == 0, plan.stderr
    assert [entry["status"] for entry in json.loads(plan.stdout)] == ["ok", "ok"]  # the same cells, recorded


def test_emulate_ranks_with_nproc_is_one_line(tmp_path):
    result = pfcbench("plan", str(write_matrix(tmp_path, "16")), "--emulate-ranks", "4", "--nproc", "2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: --emulate-ranks sets the ranks of every cell; give it without --nproc and --nnodes"
    )


def test_a_cell_without_emulation_keeps_the_id_it_had_before_the_field():
    # ids of results recorded before cells could be emulated; a resumed run must find them
    assert Cell().cell_id == "7518768b4bc5"
    assert Cell(backbone="none", classes=7).cell_id == "80d32ff7ef12"
    assert Cell(nproc_per_node=8, emulated=True).cell_id != Cell(nproc_per_node=8).cell_id


@pytest.mark.slow
def test_an_emulated_cell_fits_above_its_prediction_and_runs_out_of_memory_below(tmp_path):
    classes = 400_000
    cell = Cell(
        backbone="none", classes=classes, batch_size=512, nproc_per_node=8, emulated=True, device="cpu",
        warmup_steps=1, num_windows=1, steps_per_window=1,
    )  # fmt: skip
    (prediction,) = predict_cells([cell], num_workers=1)
    records = []
    for factor in (1.2, 0.8):
        result = pfcbench(
            "cell", "--backbone", "none", "--classes", str(classes), "--batch-size", "512", "--nproc", "8",
            "--emulated", "--device", "cpu", "--max-memory-gib", f"{prediction.peak_bytes * factor / GIB:.3f}",
            "--json", "--warmup-steps", "1", "--num-windows", "1", "--steps-per-window", "1",
            "--workdir", str(tmp_path / str(factor)),
        )  # fmt: skip
        records.append(json.loads(result.stdout))
    assert [r["status"] for r in records] == ["ok", "oom"], f"predicted {prediction.peak_gib:.2f} GiB"

    # the cell that ran: one process, rank 0 of 8, and figures of the job it stands for
    record = records[0]
    assert record["config"]["emulated"] is True
    assert record["world_size"] == 8 and record["per_gpu_batch"] == 64
    assert [rank["rank"] for rank in record["ranks"]] == [0]
    assert not (tmp_path / "1.2" / "rank-1.json").exists()
    # rank 0 alone counts a 1/8 shard's GEMMs over the whole batch; the job's estimate is eight of it
    assert record["flops_per_sample"] == 6 * 512 * classes
    # rank 0's 50,000 centres of 512 floats, their gradient and momentum: 293 MiB
    assert record["ranks"][0]["peak_rss_mib"] > 293
