"""The timed loop: warm-up steps, then timed windows with the device synchronised at their edges."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import distributed


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_windows(
    step: Callable[[], float | torch.Tensor],
    *,
    device: torch.device,
    warmup_steps: int,
    num_windows: int,
    steps_per_window: int,
    heartbeat: Callable[[], None],
    measured: AbstractContextManager | None = None,
) -> dict:
    """Run the loop and return this rank's figures; window times are the slowest rank's.

    A step returns its loss as a float or as a tensor left on the device (arcface_torch_2021 never
    reads its loss); tensors are read after the windows, so the loop adds no host sync of its own.
    Per-step times are host-clock times, the device's step times only where the step waits for the
    device (today's arcface_torch does, in Partial FC's backward); window times are always real.
    `measured` is entered around the timed windows alone (a GPU power sampler, say).
    """
    losses = []
    for _ in range(warmup_steps):
        losses.append(step())
        heartbeat()
    step_times_s = []
    window_times_s = []
    with measured or contextlib.nullcontext():
        for _ in range(num_windows):
            synchronize(device)
            window_start = time.perf_counter()
            for _ in range(steps_per_window):
                step_start = time.perf_counter()
                losses.append(step())
                step_times_s.append(time.perf_counter() - step_start)
                heartbeat()
            synchronize(device)
            window_times_s.append(time.perf_counter() - window_start)
    slowest = torch.tensor(window_times_s, dtype=torch.float64, device=device)
    distributed.all_reduce(slowest, distributed.ReduceOp.MAX)
    return {
        "window_times_s": slowest.tolist(),
        "step_times_s": step_times_s,
        "losses": [float(loss) for loss in losses],
    }


def summarise(window_times_s: list[float], steps_per_window: int, batch_size: int) -> dict:
    """Global samples/sec per window, their median and spread."""
    rates = [steps_per_window * batch_size / t for t in window_times_s]
    return {
        "samples_per_s": statistics.median(rates),
        "samples_per_s_min": min(rates),
        "samples_per_s_max": max(rates),
        "samples_per_s_windows": rates,
        "step_time_s_median": statistics.median(window_times_s) / steps_per_window,
    }
