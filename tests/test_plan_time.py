"""`pfcbench plan --gpu NAME [--link KIND] [--nnodes N]`: samples/sec predicted on a card before buying it.

The fast tests stand in a made-up memory prediction for the traced one (bench.memory.predict_cells);
the slow ones trace the packaged reports' real steps, as a user's plan does.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import bench.memory
from bench.cli import main
from bench.gpus import GPUS, SERVERS
from bench.matrix import PACKAGED, load_matrix
from bench.sureness import sureness
from bench.time_model import FIT, LINK_NAMES, predict_step, target_for
from bench.units import GIB

PARTS = {"compute", "memory", "communication", "fixed", "data"}
WEBFACE42M_IMAGES_X_EPOCHS = 42_474_557 * 20


def error_line(result) -> str:
    """The one error line of a refused command; fails on a traceback or an exit code other than 2."""
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture
def made_up_memory(monkeypatch):
    """A peak of 1 GiB per 16 samples of a rank's batch: the fast tests ask only which cells fit."""

    def predict_cells(cells, *args, **kwargs):
        peaks = [cell.per_gpu_batch * GIB // 16 for cell in cells]
        return [bench.memory.Prediction(peak_bytes=peak, parts={"activations": peak}) for peak in peaks]

    monkeypatch.setattr(bench.memory, "predict_cells", predict_cells)


@pytest.fixture
def no_trace(monkeypatch):
    """Refused input is refused before any cell is traced."""

    def predict_cells(cells, *args, **kwargs):
        raise AssertionError("traced a cell of a plan that was refused")

    monkeypatch.setattr(bench.memory, "predict_cells", predict_cells)


def plan(tmp_path, *args: str):
    return CliRunner().invoke(main, ["plan", *args, "--results", str(tmp_path / "results")])


def plan_json(tmp_path, *args: str) -> list[dict]:
    result = plan(tmp_path, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def check_speeds(entries: list[dict]) -> None:
    """Every cell has a speed, its step parts add up to it, and a fit."""
    for entry in entries:
        parts = entry["predicted_step_ms"]
        assert set(parts) == PARTS and all(ms >= 0 for ms in parts.values())
        step_s = sum(parts.values()) / 1e3
        assert entry["predicted_samples_per_s"] == pytest.approx(entry["config"]["batch_size"] / step_s, rel=1e-3)
        assert isinstance(entry["predicted_fits"], bool)
        assert entry["predicted_error_pct"] == FIT.leave_one_gpu_out_by_gpu[entry["predicted_error_of"]]
        assert entry["predicted_error_worst_pct"] == FIT.leave_one_gpu_out_worst_by_gpu[entry["predicted_error_of"]]
        assert entry["predicted_for"]["impl"] == entry["config"]["impl"]
        assert "PyTorch 1.9" in entry["predicted_for"]["software"]


def test_the_v100_report_predicted_on_its_own_card_and_server(tmp_path, made_up_memory):
    """On the card and server it was published on, the plan is the time model's own prediction of the report,
    within the fit's error of the published figures, nothing extrapolated."""
    entries = plan_json(tmp_path, "v100", "--gpu", "v100-sxm2-32gb")
    check_speeds(entries)
    assert {(e["gpu"], e["server"], e["link"]) for e in entries} == {("v100-sxm2-32gb", "dgx1-v100", "nvlink")}
    assert all(e["extrapolated"] == [] for e in entries)
    assert {e["predicted_error_of"] for e in entries} == {"v100-sxm2-32gb"}  # its own report's error
    cells = load_matrix(PACKAGED / "v100.toml").cells()
    gpu, server = GPUS["v100-sxm2-32gb"], SERVERS["dgx1-v100"]
    assert [e["predicted_samples_per_s"] for e in entries] == [
        round(predict_step(cell, gpu, server).samples_per_s, 1) for cell in cells
    ]
    published = [e for e in entries if isinstance(e.get("published"), int | float)]
    errors = [abs(e["predicted_samples_per_s"] / e["published"] - 1) for e in published]
    assert len(published) >= 10 and sum(errors) / len(errors) < 0.10


def test_another_card_runs_in_its_usual_server_and_says_it_is_extrapolated(tmp_path, made_up_memory):
    result = plan(tmp_path, "a100", "--gpu", "h100-sxm", "--train-on", "webface42m", "--gpu-hour-price", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, [c.strip() for c in line.strip("|").split("|")])) for line in lines[2:] if "|" in line]
    assert {"predicted samples/s", "predicted", "predicted Hours/run (WebFace42M x 20 epochs)"} <= set(header)
    assert "predicted Cost/run (at 2/GPU-h)" in header
    assert any(row["predicted"].startswith("Fail") for row in rows)  # a Fail still has its speed and hours
    for row in rows:
        speed = float(row["predicted samples/s"].replace(",", ""))
        hours = float(row["predicted Hours/run (WebFace42M x 20 epochs)"].replace(",", ""))
        assert hours == pytest.approx(WEBFACE42M_IMAGES_X_EPOCHS / speed / 3600, rel=0.01)
    assert "samples/sec predicted in 8x h100-sxm" in result.output
    assert "link nvswitch: NVLink4 900 GB/s via NVSwitch" in result.output
    error = FIT.leave_one_gpu_out_by_gpu["a100-pcie-80gb"]
    assert "h100-sxm is an extrapolation: no report measured it; the published card whose rates are closest" in (
        result.output
    )
    assert f"a100-pcie-80gb, is off by {error:.0f}% on average" in result.output
    assert "extrapolated beyond the six reports: GPU h100-sxm (11 of 11 cells), link nvswitch" in result.output


def test_a_faster_link_never_slows_a_report_down(tmp_path, made_up_memory):
    """The RTX 3090 report's PCIe 3.0 host against the card's usual PCIe 4.0 server, P2P off in both."""
    published, usual = (
        [e["predicted_samples_per_s"] for e in plan_json(tmp_path, "rtx3090", "--gpu", "rtx3090", *link)]
        for link in ((), ("--link", "pcie4-nop2p"))
    )
    assert all(a <= b for a, b in zip(published, usual)) and usual != published


def test_nodes_spread_each_cell_over_a_100_gbit_network(tmp_path, made_up_memory):
    one, two = (plan_json(tmp_path, "v100", "--gpu", "v100-sxm2-32gb", "--nnodes", n) for n in ("1", "2"))
    assert {e["config"]["nnodes"] for e in two} == {2}
    assert {e["network_gb_s"] for e in two} == {12.5}
    for a, b in zip(one, two):
        assert b["predicted_step_ms"]["communication"] > a["predicted_step_ms"]["communication"]
        assert {"world size 16", "nnodes 2"} <= set(b["extrapolated"])
    result = plan(tmp_path, "v100", "--gpu", "v100-sxm2-32gb", "--nnodes", "2")
    assert "between nodes one 100 Gb/s link per node" in result.output


def test_plan_without_gpu_predicts_no_speed(tmp_path, made_up_memory):
    entries = plan_json(tmp_path, "v100", "--memory-gib", "32")
    assert not any(key.startswith(("predicted_samples", "predicted_step")) for e in entries for key in e)
    assert "predicted samples/s" not in plan(tmp_path, "v100", "--memory-gib", "32").output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("v100", "--gpu", "v100-sxm2-32gb", "--link", "pcie9"), "unknown link 'pcie9' (links: " + ", ".join(LINK_NAMES)),
        (("rtx3080", "--gpu", "rtx3080", "--link", "nvswitch"), "links of rtx3080: pcie3, pcie3-nop2p, pcie4, pcie4-nop2p"),
        (("v100", "--gpu", "v100-pcie-32gb", "--link", "pcie4"), "links of v100-pcie-32gb: pcie3, pcie3-nop2p)"),
        (("v100", "--link", "nvlink"), "--link needs --gpu NAME"),
        (("smoke", "--gpu", "a10"), "--gpu a10: every cell runs on the CPU"),
        (("rtx3090", "--gpu", "rtx3090", "--link", "nvlink-bridge"), "an NVLink bridge joins 2 GPUs; give --nproc 2"),
        (("v100", "--gpu", "v100-sxm2-32gb", "--nproc", "16"), "a server holds 8 GPUs; give --nproc 8 or less"),
        (
            ("v100", "--gpu", "a10", "--nproc", "1", "--nnodes", "1025", "--set", "batch_size=1025"),
            "the time model takes 1 to 1024 nodes",
        ),
        (("v100", "--gpu", "v100-sxm2-32gb", "--set", "precision=bf16"), "v100-sxm2-32gb has no bf16 rate"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_nothing_traced_nor_written(tmp_path, no_trace, args, said):
    assert said in error_line(plan(tmp_path, *args, "--json"))
    assert not (tmp_path / "results").exists()


def test_a_bridge_pairs_two_gpus_faster_than_pcie_without_p2p(tmp_path, made_up_memory):
    over = {
        link: plan_json(tmp_path, "rtx3090", "--gpu", "rtx3090", "--nproc", "2", "--link", link)
        for link in ("pcie4-nop2p", "nvlink-bridge")
    }
    for pcie, bridge in zip(over["pcie4-nop2p"], over["nvlink-bridge"]):
        assert bridge["predicted_step_ms"]["communication"] < pcie["predicted_step_ms"]["communication"]
        assert bridge["link_text"] == "NVLink3 bridges 112.5 GB/s joining pairs of GPUs"


def test_the_matrix_server_is_used_only_for_its_own_card_without_a_link():
    report = load_matrix(PACKAGED / "a100.toml").report
    assert target_for(GPUS["a100-pcie-80gb"], report).server is SERVERS["servmax-g408-x2"]
    assert target_for(GPUS["a100-pcie-80gb"], report, "pcie4").server.name == "8x a100-pcie-80gb over pcie4"
    assert target_for(GPUS["a100-sxm4-80gb"], report).link == "nvswitch"
    assert target_for(GPUS["a100-sxm4-80gb"], {}).server.name == "8x a100-sxm4-80gb"


@pytest.mark.slow
def test_acceptance_v100_json_on_its_card(tmp_path):
    """`pfcbench plan v100 --gpu v100-sxm2-32gb --json`: each cell its speed, step parts and fit, traced for real."""
    entries = plan_json(tmp_path, "v100", "--gpu", "v100-sxm2-32gb")
    assert len(entries) == len(load_matrix(PACKAGED / "v100.toml").cells())
    check_speeds(entries)


@pytest.mark.slow
def test_acceptance_a100_report_on_h100_with_training_hours(tmp_path):
    """`pfcbench plan a100 --gpu h100-sxm --train-on webface42m`: samples/sec, Fail or fits, and hours."""
    result = plan(tmp_path, "a100", "--gpu", "h100-sxm", "--train-on", "webface42m")
    assert result.exit_code == 0, result.output
    assert "predicted samples/s" in result.output and "predicted Hours/run (WebFace42M x 20 epochs)" in result.output
    assert "(h100-sxm: 79.35 GiB)" in result.output
    assert "samples/sec predicted in 8x h100-sxm" in result.output


def test_each_catalogue_gpu_is_as_sure_as_its_own_report_or_the_closest_published_card():
    """The error shipped with the package: a published card's own leave-one-GPU-out error; another card is an
    extrapolation, with the error of the published card whose rates are nearest (the RTX 4090's is the 3090's)."""
    published = set(FIT.leave_one_gpu_out_by_gpu)
    assert published == set(FIT.gpus)
    for name, gpu in GPUS.items():
        sure = sureness(gpu)
        assert sure.extrapolated == (name not in published)
        assert sure.error_pct == FIT.leave_one_gpu_out_by_gpu[sure.published_gpu]
        assert sure.error_pct <= sure.worst_error_pct == FIT.leave_one_gpu_out_worst_by_gpu[sure.published_gpu]
    assert sureness(GPUS["rtx4090"]).published_gpu == "rtx3090"
    assert sureness(GPUS["v100-pcie-32gb"]).published_gpu == "v100-sxm2-32gb"
