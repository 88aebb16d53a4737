"""The GPU catalogue: `pfcbench gpus`, and `plan --gpu NAME` predicting against a card's memory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import bench.memory
from bench.cli import main
from bench.gpus import GPUS, gpu_named
from bench.matrix import PACKAGED, load_matrix
from bench.units import GIB, MIB

NAMES = [
    "rtx3080", "rtx3090", "rtx4090", "v100-sxm2-32gb", "v100-pcie-32gb", "a10", "a30", "a100-pcie-80gb",
    "a100-sxm4-40gb", "a100-sxm4-80gb", "h100-sxm", "h100-pcie", "h200", "l40s",
]  # fmt: skip

REPORT_CARDS = {
    "rtx3080": "rtx3080",
    "rtx3090": "rtx3090",
    "v100": "v100-sxm2-32gb",
    "a10": "a10",
    "a30": "a30",
    "a100": "a100-pcie-80gb",
}
"""Each packaged report and the card it ran on."""

DRIVER_MIB = {"rtx3080": 10018, "rtx3090": 24268, "v100-sxm2-32gb": 32510, "a10": 22731, "a30": 24258,
              "a100-pcie-80gb": 81251}  # fmt: skip
"""nvidia-smi's totals in the published reports."""


def error_line(result) -> str:
    """The one error line of a refused command, after click's usage hint; fails on a traceback or exit code 0."""
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_gpus_lists_the_fourteen_with_their_figures_and_sources():
    result = CliRunner().invoke(main, ["gpus"])
    assert result.exit_code == 0, result.output
    table = [line for line in result.output.splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert [row[0] for row in rows] == NAMES
    rtx3080 = dict(zip([cell.strip() for cell in table[0].strip("|").split("|")], rows[0]))
    assert rtx3080["memory GiB"] == "9.78" and rtx3080["FP16/BF16"] == "59.5" and rtx3080["TDP W"] == "320"
    assert "P2P off" in rtx3080["link in an 8-GPU server (GB/s, both directions)"] and rtx3080["memory GB/s"] == "760"
    sources = result.output.split("Sources:")[1].strip().splitlines()
    assert [line.split(":")[0] for line in sources] == [f"- {name}" for name in NAMES]


def test_gpus_json_holds_the_driver_reported_memory():
    result = CliRunner().invoke(main, ["gpus", "--json"])
    assert result.exit_code == 0, result.output
    specs = {spec["name"]: spec for spec in json.loads(result.output)}
    assert list(specs) == NAMES
    assert {name: specs[name]["memory_mib"] for name in DRIVER_MIB} == DRIVER_MIB
    assert not any(specs[name]["memory_derived"] for name in DRIVER_MIB)
    assert all(specs[name]["memory_derived"] for name in set(NAMES) - set(DRIVER_MIB))
    assert specs["a100-sxm4-80gb"]["peaks"] == {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0}
    assert specs["h100-sxm"]["link"] == {"kind": "nvswitch", "generation": 4, "gb_s": 900, "p2p": True,
                                         "bridge_gb_s": None}  # fmt: skip


def test_gpus_answers_without_torch():
    blocked = "import sys; sys.modules['torch'] = None; from bench.cli import main; main(['gpus'])"
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(("typed", "name"), [("RTX3080", "rtx3080"), ("H100-SXM", "h100-sxm"), (" a10 ", "a10")])
def test_a_gpu_name_is_taken_in_any_case(typed, name):
    assert gpu_named(typed) is GPUS[name]


@pytest.mark.parametrize(("typed", "meant"), [("rtx 3090", "rtx3090"), ("l40", "l40s"), ("a100-sxm-80gb", "a100-sxm4-80gb")])  # fmt: skip
def test_an_unknown_gpu_is_one_line_naming_the_one_meant_and_every_one(typed, meant):
    line = error_line(CliRunner().invoke(main, ["plan", "rtx3080", "--gpu", typed]))
    assert f"unknown GPU {typed!r}; did you mean {meant}?" in line
    assert all(name in line for name in NAMES)


def test_gpu_and_memory_gib_together_are_a_usage_error():
    line = error_line(CliRunner().invoke(main, ["plan", "rtx3080", "--gpu", "rtx3080", "--memory-gib", "10"]))
    assert "--gpu rtx3080 gives the memory per rank (10018 MiB); give it or --memory-gib, not both" in line


@pytest.fixture
def predictions_once(monkeypatch):
    """predict_cells that traces each cell once per test: the second plan of a matrix reuses the first's
    predictions, so that two plans compare only what they were given as memory per rank."""
    traced: dict[str, bench.memory.Prediction] = {}
    predict_cells = bench.memory.predict_cells

    def once(cells, *args, **kwargs):
        new = [cell for cell in cells if cell.cell_id not in traced]
        traced.update(zip([cell.cell_id for cell in new], predict_cells(new, *args, **kwargs) if new else []))
        return [traced[cell.cell_id] for cell in cells]

    monkeypatch.setattr(bench.memory, "predict_cells", once)


def plan_json(tmp_path, *args: str) -> list[dict]:
    result = CliRunner().invoke(main, ["plan", *args, "--results", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.slow
def test_plan_gpu_predicts_as_memory_gib_at_the_cards_driver_reported_size(tmp_path, predictions_once):
    """The RTX 3080 report, whose 2M-class fp16 Partial FC row at batch 1024 fits only at the card's driver-reported
    10018 MiB; the other reports' cards differ from it only in their size (test_each_report_names_its_card)."""
    report, card = "rtx3080", REPORT_CARDS["rtx3080"]
    by_name = plan_json(tmp_path, report, "--gpu", card)
    by_size = plan_json(tmp_path, report, "--memory-gib", repr(DRIVER_MIB[card] / 1024))
    assert {entry["memory_gib"] for entry in by_name} == {DRIVER_MIB[card] * MIB / GIB}
    assert {entry["gpu"] for entry in by_name} == {card}
    assert [e["predicted_fits"] for e in by_name] == [e["predicted_fits"] for e in by_size]
    published = [(e["cell_id"], e["published"] != "Fail") for e in by_name if "published" in e]
    assert published == [(e["cell_id"], e["predicted_fits"]) for e in by_name if "published" in e]
    result = CliRunner().invoke(main, ["plan", report, "--gpu", card, "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Fail (rtx3080: 9.78 GiB)" in result.output and "fits (rtx3080: 9.78 GiB)" in result.output
    assert "predicted on rtx3080 (NVIDIA GeForce RTX 3080 10GB, 10018 MiB" in result.output
    assert ": 7 Fail, 6 fit" in result.output and len(by_name) == 13


@pytest.mark.parametrize("report", list(REPORT_CARDS))
def test_each_report_names_its_card(report):
    matrix = load_matrix(PACKAGED / f"{report}.toml")
    assert matrix.report["gpu"] == REPORT_CARDS[report]
    assert gpu_named(REPORT_CARDS[report]).memory_mib == DRIVER_MIB[REPORT_CARDS[report]]
