"""`pfcbench cell`: one real torchrun job of 2 gloo ranks on the CPU."""

from __future__ import annotations

import json
import time

import pytest

from tests.cli import pfcbench
from tests.procs import pids_with

pytestmark = pytest.mark.slow  # real torchrun cells

FAST = ["--warmup-steps", "1", "--num-windows", "2", "--steps-per-window", "1"]
PFC_200K = ["--backbone", "none", "--classes", "200000", "--batch-size", "128", "--nproc", "2", "--sample-rate", "0.1"]


def test_partial_fc_cell_prints_an_ok_record(tmp_path):
    result = pfcbench("cell", *PFC_200K, "--device", "cpu", "--json", *FAST, "--workdir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "ok"
    assert record["world_size"] == 2 and record["per_gpu_batch"] == 64
    assert record["config"]["sample_rate"] == 0.1 and record["config"]["classes"] == 200000
    assert record["samples_per_s"] > 0
    assert record["samples_per_s_min"] <= record["samples_per_s"] <= record["samples_per_s_max"]
    assert len(record["step_times_s"]) == record["measured_steps"] == 2
    # the classifier's three GEMMs over the 20,000 sampled centres of both ranks, per sample
    assert record["flops_per_sample"] == 6 * 512 * 20_000
    assert record["achieved_tflops"] > 0 and record["mfu"] is None
    # each rank holds 100k centres of 512 floats (205 MB): its peak RSS must show them
    assert all(rank["peak_rss_mib"] > 200 for rank in record["ranks"])
    assert sorted(json.loads((tmp_path / f"rank-{r}.json").read_text())["rank"] for r in (0, 1)) == [0, 1]


# r18 in fp32: its bf16 convolutions take most of a minute on a CPU without bf16 instructions
# (tests/test_backbones.py runs its forward under autocast in-process)
@pytest.mark.parametrize(("backbone", "precision"), [("mbf", "bf16"), ("r18", "fp32")])
def test_light_backbones_train(backbone, precision):
    result = pfcbench(
        "cell", "--backbone", backbone, "--classes", "1000", "--batch-size", "4", "--nproc", "2",
        "--device", "cpu", "--precision", precision, "--json", *FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "ok" and record["config"]["backbone"] == backbone
    assert record["loss_first"] > 0 and record["samples_per_s"] > 0


@pytest.mark.parametrize(
    ("backbone", "precision", "rate"),
    # every backbone, both precisions and both rates; the 2021 classifier's math at each rate is
    # tests/test_partial_fc_2021.py's, so each backbone runs once (r18 in fp32, as above)
    [("none", "bf16", "0.1"), ("mbf", "bf16", "1.0"), ("r18", "fp32", "0.1")],
)  # fmt: skip
def test_the_2021_impl_trains(backbone, precision, rate):
    result = pfcbench(
        "cell", "--impl", "arcface_torch_2021", "--backbone", backbone, "--classes", "1000", "--batch-size", "4",
        "--nproc", "2", "--device", "cpu", "--precision", precision, "--sample-rate", rate, "--json", *FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "ok"
    assert (record["config"]["impl"], record["config"]["backbone"]) == ("arcface_torch_2021", backbone)
    assert 0 < record["loss_first"] < 100 and record["samples_per_s"] > 0


def test_the_2021_impl_in_fp16_with_the_constant_label():
    result = pfcbench(
        "cell", "--impl", "arcface_torch_2021", "--backbone", "none", "--classes", "1000", "--batch-size", "4",
        "--nproc", "2", "--device", "cpu", "--precision", "fp16", "--label-mode", "constant", "--json", *FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "ok" and record["config"]["label_mode"] == "constant"
    assert 0 < record["loss_first"] < 100


@pytest.mark.parametrize("backbone", ["none", "mbf"])
def test_fused_impl_trains_with_arcface_torch_losses(backbone):
    losses = {}
    for impl in ("arcface_torch", "fused"):
        result = pfcbench(
            "cell", "--impl", impl, "--backbone", backbone, "--classes", "1001", "--batch-size", "4", "--nproc", "2",
            "--device", "cpu", "--json", *FAST,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout)
        assert record["status"] == "ok" and record["config"]["impl"] == impl
        losses[impl] = record["loss_first"]
    # the same seed gives the same weights, data and labels: the two impls start from the same loss
    assert losses["fused"] == pytest.approx(losses["arcface_torch"], rel=1e-4)


def test_memory_cap_gives_a_real_oom_promptly(tmp_path):
    started = time.monotonic()
    result = pfcbench("cell", *PFC_200K, "--device", "cpu", "--max-memory-gib", "0.3", "--json", *FAST,
                      "--workdir", str(tmp_path))  # fmt: skip
    elapsed_s = time.monotonic() - started
    assert result.returncode == 1
    record = json.loads(result.stdout)
    assert record["status"] == "oom"
    assert record["phase"] in {"setup", "forward", "backward", "optimizer"}
    assert "can't allocate memory" in record["error"]
    assert record["oom_bytes"] > 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: cell oom: rank ")
    # far below the cell's timeouts (30 minutes): the out-of-memory ends the job, no watchdog does
    assert elapsed_s < 200, f"an out-of-memory cell took {elapsed_s:.0f} s"
    assert pids_with("bench.rank.worker", str(tmp_path)) == []


def test_impossible_split_is_one_line_and_exit_2():
    result = pfcbench("cell", "--backbone", "none", "--batch-size", "5", "--nproc", "2", "--device", "cpu")
    assert result.returncode == 2
    assert "batch_size 5 does not split over 2 ranks" in result.stderr
    assert "Traceback" not in result.stderr
