"""Model FLOPs utilisation: achieved TFLOP/s against the peak of the GPUs a cell ran on.

Peaks are dense tensor-core (or plain FP32) figures in TFLOP/s per GPU, from the GPU catalogue
(bench.gpus.FAMILY_PEAKS), found by the words of a device name as torch or NVML print it.
GeForce cards count FP16/BF16 with FP32 accumulation, as PyTorch runs them.
The precision a cell is measured against is its backbone's: fp16, bf16, tf32 (fp32 with TF32
allowed) or fp32; the classifier runs in fp32 whatever the backbone's precision, as in
arcface_torch, so a classifier-bound cell shows a low MFU against a half-precision peak.
"""

from __future__ import annotations

import re

from bench.gpus import CATALOGUE, FAMILY_PEAKS, GpuSpec

VARIANT_SUFFIX = r"(?!\w| Ti\b| SUPER\b| D\b| Laptop\b)"
"""What may not follow a model's name: a longer model number or a variant with other peaks."""


FAMILIES = sorted(FAMILY_PEAKS, key=lambda family: -len(family.split()))
"""The families a device name is matched against, variants ("H100 PCIe") before their family ("H100")."""


def gpu_model(device_name: str) -> str | None:
    """The family of FAMILY_PEAKS a device name (as torch or NVML print it) belongs to, if any."""
    for model in FAMILIES:
        if has_words(device_name, model.split(), VARIANT_SUFFIX):
            return model
    return None


def gpu_spec(device_name: str) -> GpuSpec | None:
    """The catalogue's GPU a device name is ("NVIDIA A100-SXM4-80GB": a100-sxm4-80gb), if any."""
    family = gpu_model(device_name)
    for spec in CATALOGUE:
        if spec.family == family and all(
            re.search(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", device_name, re.IGNORECASE)
            for word in spec.device_words
        ):
            return spec
    return None


def has_words(device_name: str, words: list[str], after: str) -> bool:
    """Whether words appear in device_name in a row (a space or hyphen between them), not inside a longer word."""
    pattern = r"[ -]".join(re.escape(word) for word in words)
    return re.search(rf"(?<![\w-]){pattern}{after}", device_name, re.IGNORECASE) is not None


def peak_precision(precision: str, tf32: bool) -> str:
    """The peak a cell is measured against: its backbone precision, tf32 for fp32 with TF32 allowed."""
    return "tf32" if precision == "fp32" and tf32 else precision


def peak_tflops(device_name: str | None, precision: str, tf32: bool) -> float | None:
    """One GPU's peak TFLOP/s at the cell's precision; None on the CPU or for an unknown GPU."""
    model = gpu_model(device_name) if device_name else None
    if model is None:
        return None
    peaks = FAMILY_PEAKS[model]
    # Turing and Volta have no TF32: fp32 with TF32 allowed still runs at the fp32 peak.
    return peaks.at(peak_precision(precision, tf32)) or (peaks.fp32 if precision == "fp32" else None)


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
