"""The time model: what a user planning a purchase would notice in its predictions."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from bench.config import Cell
from bench.gpus import GPUS, SERVERS, PeakTflops, pcie, usual_server
from bench.matrix import PACKAGED, MatrixError, load_matrix
from bench.time_model import BLOCKS, TIME_CONSTANTS, predict_step

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "time_published.py"

CELLS = [
    Cell(backbone="r50", classes=617_970, batch_size=1024, nproc_per_node=8, precision="fp16", impl=impl)
    for impl in ("arcface_torch", "arcface_torch_2021", "arcface_torch_2022", "fused")
] + [
    Cell(backbone="r100", classes=2_000_000, batch_size=512, nproc_per_node=8, precision="fp32", tf32=True),
    Cell(backbone="r50", classes=10_000_000, batch_size=2048, nproc_per_node=8, sample_rate=0.1, data="records"),
]


def load_script():
    spec = importlib.util.spec_from_file_location("time_published", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: f"{c.impl}-{c.backbone}-{c.precision}")
@pytest.mark.parametrize("gpu", ["v100-sxm2-32gb", "rtx3090", "a100-pcie-80gb", "h100-sxm"])
def test_more_classes_never_speed_a_cell_up(cell, gpu):
    server = usual_server(GPUS[gpu])
    speeds = [
        predict_step(dataclasses.replace(cell, classes=cell.classes * k), GPUS[gpu], server).samples_per_s
        for k in (1, 2, 4, 8)
    ]
    assert speeds == sorted(speeds, reverse=True)


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: f"{c.impl}-{c.backbone}-{c.precision}")
def test_a_slower_link_never_speeds_a_cell_up(cell):
    gpu = GPUS["a100-sxm4-80gb"]
    servers = [
        usual_server(gpu),
        dataclasses.replace(usual_server(gpu), link=pcie(4), sockets=1),
        dataclasses.replace(usual_server(gpu), link=pcie(4), sockets=2),
        dataclasses.replace(usual_server(gpu), link=pcie(3, p2p=False), pcie_generation=3),
    ]
    speeds = [predict_step(cell, gpu, server).samples_per_s for server in servers]
    assert speeds == sorted(speeds, reverse=True)
    assert speeds[0] > speeds[-1]
    two_nodes = dataclasses.replace(cell, nnodes=2, batch_size=2 * cell.batch_size)  # the same batch per GPU
    assert predict_step(two_nodes, gpu, servers[0]).step_s > predict_step(cell, gpu, servers[0]).step_s


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: f"{c.impl}-{c.backbone}-{c.precision}")
def test_the_parts_add_up_to_the_step(cell):
    step = predict_step(cell, GPUS["a10"], SERVERS["servmax-g408-x2"])
    parts = step.parts_ms()
    assert set(parts) == {"compute", "memory", "communication", "fixed", "data"}
    assert all(ms >= 0 for ms in parts.values())
    assert sum(parts.values()) == pytest.approx(1e3 * step.step_s)
    assert step.samples_per_s == pytest.approx(cell.batch_size / step.step_s)


def test_a_gpu_with_twice_the_rates_is_faster():
    gpu = GPUS["a30"]
    doubled = dataclasses.replace(
        gpu,
        peaks=PeakTflops(**{k: v and 2 * v for k, v in dataclasses.asdict(gpu.peaks).items()}),
        bandwidth_gb_s=2 * gpu.bandwidth_gb_s,
    )
    server = SERVERS["servmax-g408-x2"]
    for cell in CELLS:
        slow, fast = predict_step(cell, gpu, server), predict_step(cell, doubled, server)
        assert fast.samples_per_s > slow.samples_per_s
        assert fast.compute_s < slow.compute_s


def test_the_v100_nvlink_server_beats_a_pcie_host_of_the_same_card():
    cell = CELLS[1]
    gpu = GPUS["v100-sxm2-32gb"]
    nvlink = predict_step(cell, gpu, SERVERS["dgx1-v100"])
    over_pcie = predict_step(cell, gpu, SERVERS["servmax-g408-x2"])
    assert nvlink.communication_s < over_pcie.communication_s
    assert nvlink.compute_s == over_pcie.compute_s


def test_record_decoding_caps_a_large_batch():
    """The A100 report's bs10240 row: the GPU outruns the CPUs decoding the images."""
    cell = Cell(
        backbone="r50", classes=617_970, batch_size=10240, nproc_per_node=8, precision="fp16", tf32=True,
        impl="arcface_torch_2022", margin="cosface", data="records",
    )  # fmt: skip
    step = predict_step(cell, GPUS["a100-pcie-80gb"], SERVERS["servmax-g408-x2"])
    assert step.data_s > 0
    synthetic = predict_step(dataclasses.replace(cell, data="synthetic"), GPUS["a100-pcie-80gb"], SERVERS["dgx1-v100"])
    assert synthetic.data_s == 0


def test_the_fitted_constants_reproduce_the_scripts_in_sample_error():
    script = load_script()
    figures = script.published_figures()
    assert len(figures) >= 50
    assert {f.report for f in figures} == set(script.REPORTS)
    assert not any(f.cell.backbone == "r200" for f in figures)  # the not_run rows stand on r200
    in_sample = script.percent(script.errors(TIME_CONSTANTS, figures))
    last = (REPO / "benchmarks" / "time_published.md").read_text().strip().splitlines()[-1]
    match = re.fullmatch(r"leave-one-GPU-out MAPE (\d+)%, worst report (\d+)% \((\w+)\), in-sample MAPE (\d+)%", last)
    assert match, last
    assert abs(in_sample - int(match.group(4))) <= 1
    assert in_sample <= 10


def test_every_packaged_report_names_its_gpu_and_server():
    expected = {
        "rtx3080": ("rtx3080", "xeon-8255c-pcie3"),
        "rtx3090": ("rtx3090", "xeon-8255c-pcie3"),
        "v100": ("v100-sxm2-32gb", "dgx1-v100"),
        "a10": ("a10", "servmax-g408-x2"),
        "a30": ("a30", "servmax-g408-x2"),
        "a100": ("a100-pcie-80gb", "servmax-g408-x2"),
    }
    for name, (gpu, server) in expected.items():
        report = load_matrix(PACKAGED / f"{name}.toml").report
        assert (report["gpu"], report["server"]) == (gpu, server)


def test_the_block_table_matches_the_backbones():
    from bench.workload.backbones import IRESNET_LAYERS

    assert {name: sum(layers) for name, layers in IRESNET_LAYERS.items()} == {k: BLOCKS[k] for k in IRESNET_LAYERS}


@pytest.mark.parametrize(
    ("key", "value", "known"), [("gpu", "rtx9090", "a100-pcie-80gb"), ("server", "dgx2", "dgx1-v100")]
)
def test_an_unknown_gpu_or_server_is_refused_naming_the_known_ones(tmp_path, key, value, known):
    text = (PACKAGED / "example.toml").read_text().replace("[report]\n", f'[report]\n{key} = "{value}"\n', 1)
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(MatrixError) as error:
        load_matrix(path)
    message = str(error.value)
    assert f"[report] {key}: unknown {key} '{value}'" in message
    assert known in message
    assert "\n" not in message
