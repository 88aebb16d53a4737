"""Tests for the CPU probe (bench.rank.probe, bench.host_rates) and the predicted column of a report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import host_rates as host_rates_module
from bench.config import Cell
from bench.host_rates import HostRates, cache_path, cell_rates, cpu_spec, host_rates, predict_cpu_step
from bench.launch.local import worker_env
from bench.matrix import load_matrix
from bench.report.write import write_report
from bench.time_model import CannotPredict
from bench.workload.cost import step_cost
from tests.test_report import ENV, RTX3080, published_records, tables, write_results_dir

RATES = HostRates(
    ranks=2,
    threads=1,
    gemm_flops_s=50e9,
    conv_flops_s={"iresnet fp32": 30e9, "mbf fp32": 20e9, "iresnet bf16": 45e9, "mbf bf16": 10e9},
    elementwise_gb_s={"iresnet fp32": 1.0, "mbf fp32": 2.0, "iresnet bf16": 0.5, "mbf bf16": 1.5},
    copy_gb_s=5.0,
    op_s=4e-6,
    all_reduce_latency_s=2e-4,
    all_reduce_gb_s=1.0,
)


def smoke_cell(**fields) -> Cell:
    return Cell(
        **({"backbone": "mbf", "device": "cpu", "nproc_per_node": 2, "classes": 1000, "batch_size": 16} | fields)
    )


@pytest.mark.slow
def test_the_probe_measures_positive_finite_rates_and_caches_them(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    rates = cell_rates(smoke_cell())
    figures = [rates.gemm_flops_s, rates.copy_gb_s, rates.op_s, rates.all_reduce_latency_s, rates.all_reduce_gb_s]
    figures += [*rates.conv_flops_s.values(), *rates.elementwise_gb_s.values()]
    assert all(math.isfinite(f) and f > 0 for f in figures)
    assert set(rates.conv_flops_s) == {"mbf fp32", "mbf bf16"}  # the cell's backbone's convolutions alone
    kinds = {f"{kind} {precision}" for kind in ("iresnet", "mbf") for precision in ("fp32", "bf16")}
    assert set(rates.elementwise_gb_s) == kinds
    assert rates.all_reduce_latency_s > rates.op_s  # a collective waits for the other rank
    assert cache_path() == tmp_path / "pfcbench" / "host-rates.json"
    assert len(json.loads(cache_path().read_text())) == 1
    assert host_rates(2, kinds={"mbf"}) == rates  # from the cache
    assert cell_rates(smoke_cell(backbone="none")) == rates


def test_a_cached_entry_without_a_backbones_convolutions_is_probed_again_with_them(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    asked = []

    def probe(ranks: int, capped: bool, kinds: set[str]) -> HostRates:
        asked.append(kinds)
        return HostRates(**RATES.to_dict() | {"conv_flops_s": {k: v for k, v in RATES.conv_flops_s.items()
                                                                if k.split()[0] in kinds}})  # fmt: skip

    monkeypatch.setattr(host_rates_module, "run_probe", probe)
    assert cell_rates(smoke_cell()).kinds == {"mbf"}
    assert cell_rates(smoke_cell(backbone="r50")).kinds == {"mbf", "iresnet"}
    assert cell_rates(smoke_cell(backbone="r18")).kinds == {"mbf", "iresnet"}
    assert asked == [{"mbf"}, {"mbf", "iresnet"}]


def test_a_backbone_whose_convolutions_were_not_probed_is_not_predicted():
    mbf_only = HostRates(**RATES.to_dict() | {"conv_flops_s": {"mbf fp32": 20e9, "mbf bf16": 10e9}})
    assert predict_cpu_step(smoke_cell(), mbf_only).samples_per_s > 0
    assert predict_cpu_step(smoke_cell(backbone="none"), mbf_only).samples_per_s > 0
    with pytest.raises(CannotPredict, match="the CPU probe timed no iresnet convolutions"):
        predict_cpu_step(smoke_cell(backbone="r50"), mbf_only)


def test_a_smoke_cell_is_predicted_from_the_rates():
    cell = smoke_cell()
    step = predict_cpu_step(cell, RATES)
    cost = step_cost(cell)
    assert step.compute_s == pytest.approx(cost.backbone.flops / 20e9 + cost.classifier.flops / 20e9)
    assert step.memory_s == pytest.approx(cost.num_bytes / 2e9)  # nothing hidden behind compute on a CPU
    assert step.communication_s > 0 and step.fixed_s > 0
    assert 0 < step.samples_per_s < cell.batch_size / step.compute_s
    faster = HostRates(**(RATES.to_dict() | {"conv_flops_s": RATES.conv_flops_s | {"mbf fp32": 40e9}}))
    assert predict_cpu_step(cell, faster).samples_per_s > step.samples_per_s


def test_each_backbone_takes_its_layers_rates_in_its_precision():
    assert cpu_spec(RATES, smoke_cell(backbone="r50")).peaks.fp32 == pytest.approx(0.03)
    assert cpu_spec(RATES, smoke_cell(backbone="r50")).peaks.bf16 == pytest.approx(0.045)
    assert cpu_spec(RATES, smoke_cell()).bandwidth_gb_s == 2.0
    assert cpu_spec(RATES, smoke_cell(precision="bf16")).bandwidth_gb_s == 1.5
    assert cpu_spec(RATES, smoke_cell(backbone="none")).peaks.fp32 == pytest.approx(0.05)
    assert cpu_spec(RATES, smoke_cell(backbone="none")).bandwidth_gb_s == 1.5
    slower = predict_cpu_step(smoke_cell(precision="bf16"), RATES).samples_per_s
    assert slower < predict_cpu_step(smoke_cell(), RATES).samples_per_s  # mbf's bf16 rates are the lower here


def test_a_cpu_fp16_cell_is_not_predicted():
    with pytest.raises(CannotPredict, match="the CPU probe measures no fp16 rate"):
        predict_cpu_step(smoke_cell(precision="fp16"), RATES)


@pytest.mark.slow
def test_a_capped_cell_is_probed_in_its_ranks_environment(tmp_path, monkeypatch):
    """The probe of a capped cell runs under the allocator setting its ranks get, which slows them."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    capped = smoke_cell(max_memory_gib=4.0)
    assert worker_env(capped)["MALLOC_MMAP_THRESHOLD_"] == "1048576"
    assert "MALLOC_MMAP_THRESHOLD_" not in worker_env(smoke_cell())
    rates = cell_rates(capped)
    [key] = json.loads(cache_path().read_text())
    assert key.endswith(" capped")
    assert all(math.isfinite(f) and f > 0 for f in rates.conv_flops_s.values())


def report_of(tmp_path: Path, env: dict, *, as_published: bool = False) -> str:
    matrix = load_matrix(RTX3080)
    results = write_results_dir(tmp_path / "results" / "rtx3080", list(published_records(matrix).values()))
    (results / "env.json").write_text(json.dumps(env))
    out, _ = write_report(results, out=tmp_path / "report.md", as_published=as_published)
    return out.read_text()


def with_gpus(name: str | None) -> dict:
    return dict(ENV, gpus=[] if name is None else [{"index": i, "name": name, "memory_mib": 81251} for i in range(8)])


def test_a_run_on_a_catalogue_gpu_shows_the_prediction_beside_each_figure(tmp_path):
    markdown = report_of(tmp_path, with_gpus("NVIDIA A100 80GB PCIe"))
    table = tables(markdown)["2. 600K Identities"]
    header = table[0]
    place = header.index("Predicted (a100-pcie-80gb)")
    assert header[place - 1] == "Samples/sec"
    assert all(row[place].startswith("~") and int(row[place][1:]) > 0 for row in table[1:])
    assert "Predicted (a100-pcie-80gb) is pfcbench's time model" in markdown


@pytest.mark.parametrize("gpu", [None, "NVIDIA T4", "NVIDIA GeForce RTX 2080 Ti"])
def test_no_prediction_for_a_cpu_run_or_a_gpu_outside_the_catalogue(tmp_path, gpu):
    assert "Predicted" not in report_of(tmp_path, with_gpus(gpu))


def test_no_prediction_as_published(tmp_path):
    assert "Predicted" not in report_of(tmp_path, with_gpus("NVIDIA A100 80GB PCIe"), as_published=True)
