"""How sure the time model is of a GPU's predictions: the leave-one-GPU-out error of its own published
report, on average and at worst, or for a card no report measured, that of the published card whose
rates are closest (the errors ship in bench.time_model.FIT, written by benchmarks/time_published.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.gpus import GPUS, GpuSpec
from bench.time_model import FIT


@dataclass(frozen=True, kw_only=True)
class Sureness:
    """How far off a GPU's predictions are to be expected: the leave-one-GPU-out error of its own report, or
    for a card no report measured, that of the published card whose rates are closest."""

    error_pct: float
    """The mean absolute percentage error over the report's figures."""
    worst_error_pct: float
    """The largest of them: how far off one figure of the report came."""
    published_gpu: str
    """The card whose report the error is of."""
    extrapolated: bool
    """True where that is another card than the one predicted."""

    def text(self, gpu: str) -> str:
        off = f"off by {self.error_pct:.0f}% on average and {self.worst_error_pct:.0f}% at worst"
        if not self.extrapolated:
            return f"{off} on the {gpu} report when it is left out of the fit"
        return (
            f"{gpu} is an extrapolation: no report measured it; the published card whose rates are closest, "
            f"{self.published_gpu}, is {off} when its report is left out of the fit"
        )


def sureness(gpu: GpuSpec) -> Sureness:
    """How sure the model is of gpu's predictions (FIT's leave-one-GPU-out errors, shipped with the package)."""
    errors = FIT.leave_one_gpu_out_by_gpu
    published = gpu.name if gpu.name in errors else min(errors, key=lambda name: rate_distance(gpu, GPUS[name]))
    return Sureness(
        error_pct=errors[published],
        worst_error_pct=FIT.leave_one_gpu_out_worst_by_gpu[published],
        published_gpu=published,
        extrapolated=published != gpu.name,
    )


def rate_distance(a: GpuSpec, b: GpuSpec) -> float:
    """How unlike two GPUs' rates are: the sum of the absolute log ratios of their fp32 and half-precision peaks
    and of their memory bandwidths."""
    pairs = [
        (a.peaks.fp32, b.peaks.fp32),
        (a.peaks.fp16 or a.peaks.fp32, b.peaks.fp16 or b.peaks.fp32),
        (a.bandwidth_gb_s, b.bandwidth_gb_s),
    ]
    return sum(abs(math.log(x / y)) for x, y in pairs)
