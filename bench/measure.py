"""The timed loop: warm-up steps, then timed windows with the device synchronised at their edges."""

from __future__ import annotations

import contextlib
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
    after_warmup: Callable[[], None] | None = None,
) -> dict:
    """Run the loop and return this rank's figures; window times are the slowest rank's.

    A step returns its loss as a float or as a tensor left on the device (arcface_torch_2021 never
    reads its loss); tensors are read after the windows, so the loop adds no host sync of its own.
    Per-step times are host-clock times, the device's step times only where the step waits for the
    device (today's arcface_torch does, in Partial FC's backward); window times are always real.
    `measured` is entered around the timed windows alone (a GPU power sampler, say);
    `after_warmup` runs once between warm-up and the first window (to reset peak memory, say).
    """
    losses = []
    for _ in range(warmup_steps):
        losses.append(step())
        heartbeat()
    synchronize(device)
    if after_warmup is not None:
        after_warmup()
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
