"""FLOPs per sample counted on the real step, achieved TFLOP/s and MFU against the peak table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.gpus import GPUS
from bench.mfu import gpu_model, gpu_spec, mfu_figures, peak_tflops

R50_MACS = 6.3e9


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA A30", "A30"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA B200", "B200"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L40", None),
        ("Tesla T4", "T4"),
        ("Tesla V100-SXM2-32GB", "V100"),
        ("Tesla V100-PCIE-16GB", "V100 PCIe"),
        ("Tesla V100S-PCIE-32GB", "V100S"),
        ("NVIDIA GeForce RTX 3080", "RTX 3080"),
        ("NVIDIA GeForce RTX 3080 Ti", None),
        ("NVIDIA GeForce RTX 3090", "RTX 3090"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 4090 D", None),
        ("AMD Instinct MI300X", None),
    ],
)
def test_device_names_find_their_peaks(name, model):
    assert gpu_model(name) == model


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("NVIDIA GeForce RTX 3080", "rtx3080"),
        ("GeForce RTX 3090", "rtx3090"),
        ("NVIDIA GeForce RTX 4090", "rtx4090"),
        ("Tesla V100-SXM2-32GB", "v100-sxm2-32gb"),
        ("Tesla V100-PCIE-32GB", "v100-pcie-32gb"),
        ("NVIDIA A10", "a10"),
        ("NVIDIA A30", "a30"),
        ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb"),
        ("NVIDIA A100-SXM4-40GB", "a100-sxm4-40gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA A100-PCIE-40GB", None),
        ("Tesla V100-SXM2-16GB", None),
        ("Tesla V100S-PCIE-32GB", None),
        ("NVIDIA GeForce RTX 3080 Ti", None),
        ("Tesla T4", None),
    ],
)
def test_device_names_find_their_catalogue_gpu_and_its_peaks(name, spec):
    found = gpu_spec(name)
    assert (found.name if found else None) == spec
    if found:
        assert peak_tflops(name, "fp16", False) == found.peaks.fp16 == GPUS[spec].peaks.fp16
        assert peak_tflops(name, "fp32", True) == (found.peaks.tf32 or found.peaks.fp32)


def test_peaks_follow_precision_and_tf32():
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "fp32", False) == 19.5
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "fp32", True) == 156.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "bf16", False) == 312.0
    assert peak_tflops("Tesla V100-SXM2-32GB", "fp32", True) == 15.7  # no TF32 on Volta
    assert peak_tflops("Tesla V100-SXM2-32GB", "bf16", False) is None  # nor bf16 tensor cores
    assert peak_tflops(None, "fp32", False) is None


def test_mfu_is_achieved_over_the_sum_of_the_ranks_peaks_and_none_on_the_cpu():
    eight = mfu_figures(37.9e9, 2000.0, ["NVIDIA A100-SXM4-80GB"] * 8, "fp16", False)
    assert eight["achieved_tflops"] == pytest.approx(75.8)
    assert eight["peak_tflops"] == pytest.approx(8 * 312.0)
    assert eight["mfu"] == pytest.approx(75.8 / 2496)
    cpu = mfu_figures(37.9e9, 2.0, [None, None], "fp32", False)
    assert cpu["achieved_tflops"] == pytest.approx(0.0758) and cpu["mfu"] is None
    unknown = mfu_figures(37.9e9, 2.0, ["NVIDIA A100-SXM4-80GB", "AMD Instinct MI300X"], "fp16", False)
    assert unknown["mfu"] is None


@pytest.mark.slow
def test_an_r50_cell_counts_its_backbone_and_classifier_flops():
    result = subprocess.run(
        [sys.executable, "-m", "bench.cli", "cell", "--backbone", "r50", "--classes", "1000", "--batch-size", "2",
         "--nproc", "1", "--device", "cpu", "--warmup-steps", "1", "--num-windows", "1", "--steps-per-window", "1",
         "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    expected = 6 * R50_MACS + 6 * 512 * 1000
    assert record["flops_per_sample"] == pytest.approx(expected, rel=0.05)
    assert record["achieved_tflops"] == pytest.approx(record["flops_per_sample"] * record["samples_per_s"] / 1e12)
    assert record["mfu"] is None
