"""Model FLOPs utilisation: achieved TFLOP/s against the peak of the GPUs a cell ran on.

Peaks are dense tensor-core (or plain FP32) figures from NVIDIA's datasheets, without sparsity,
in TFLOP/s per GPU. GeForce cards count FP16/BF16 with FP32 accumulation, as PyTorch runs them.
The precision a cell is measured against is its backbone's: fp16, bf16, tf32 (fp32 with TF32
allowed) or fp32; the classifier runs in fp32 whatever the backbone's precision, as in
arcface_torch, so a classifier-bound cell shows a low MFU against a half-precision peak.
"""

from __future__ import annotations

import re

PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "V100 PCIe": {"fp32": 14.0, "fp16": 112.0},
    "V100S": {"fp32": 16.4, "fp16": 130.0},
    "V100": {"fp32": 15.7, "fp16": 125.0},
    "T4": {"fp32": 8.1, "fp16": 65.0},
    "A10": {"fp32": 31.2, "tf32": 62.5, "fp16": 125.0, "bf16": 125.0},
    "A30": {"fp32": 10.3, "tf32": 82.0, "fp16": 165.0, "bf16": 165.0},
    "A100": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "fp16": 835.5, "bf16": 835.5},
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0},
    "H100": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "H200": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "B200": {"fp32": 80.0, "tf32": 1100.0, "fp16": 2250.0, "bf16": 2250.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "fp16": 362.0, "bf16": 362.0},
    "RTX 3080": {"fp32": 29.8, "tf32": 29.8, "fp16": 59.5, "bf16": 59.5},
    "RTX 3090": {"fp32": 35.6, "tf32": 35.6, "fp16": 71.0, "bf16": 71.0},
    "RTX 4090": {"fp32": 82.6, "tf32": 82.6, "fp16": 165.2, "bf16": 165.2},
}
"""Peak TFLOP/s per GPU by model and precision; a model absent from a precision has no such peak.

The first key whose words appear in a device name wins, so variants come before their family.
"""

VARIANT_SUFFIX = r"(?!\w| Ti\b| SUPER\b| D\b| Laptop\b)"
"""What may not follow a model's name: a longer model number or a variant with other peaks."""


def gpu_model(device_name: str) -> str | None:
    """The key of PEAK_TFLOPS a device name (as torch or NVML print it) belongs to, if any."""
    for model in PEAK_TFLOPS:
        words = r"[ -]".join(re.escape(word) for word in model.split())
        if re.search(rf"(?<![\w-]){words}{VARIANT_SUFFIX}", device_name, re.IGNORECASE):
            return model
    return None


def peak_precision(precision: str, tf32: bool) -> str:
    """The peak a cell is measured against: its backbone precision, tf32 for fp32 with TF32 allowed."""
    return "tf32" if precision == "fp32" and tf32 else precision


def peak_tflops(device_name: str | None, precision: str, tf32: bool) -> float | None:
    """One GPU's peak TFLOP/s at the cell's precision; None on the CPU or for an unknown GPU."""
    model = gpu_model(device_name) if device_name else None
    if model is None:
        return None
    peaks = PEAK_TFLOPS[model]
    # Turing and Volta have no TF32: fp32 with TF32 allowed still runs at the fp32 peak.
    return peaks.get(peak_precision(precision, tf32)) or (peaks["fp32"] if precision == "fp32" else None)


def mfu_figures(
    flops_per_sample: float | None,
    samples_per_s: float,
    device_names: list[str | None],
    precision: str,
    tf32: bool,
) -> dict:
    """achieved_tflops over all ranks, the sum of their GPUs' peaks and mfu, their ratio.

    device_names holds one entry per rank (None for a CPU rank); mfu is None unless every rank's
    GPU has a known peak at this precision.
    """
    achieved = flops_per_sample * samples_per_s / 1e12 if flops_per_sample is not None else None
    peaks = [peak_tflops(name, precision, tf32) for name in device_names]
    total_peak = sum(peaks) if peaks and None not in peaks else None
    return {
        "achieved_tflops": achieved,
        "peak_tflops": total_peak,
        "mfu": achieved / total_peak if achieved is not None and total_peak else None,
    }
