"""The timed loop: warm-up steps, then timed windows with the device synchronised at their edges."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import distributed
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, mm_flop

from bench.workload.device import Device


def time_windows(
    step: Callable[[], float | torch.Tensor],
    *,
    device: Device,
    warmup_steps: int,
    num_windows: int,
    steps_per_window: int,
    heartbeat: Callable[[], None],
    measured: AbstractContextManager | None = None,
    after_warmup: Callable[[], None] | None = None,
    batch_wait_s: Callable[[], float | None] | None = None,
) -> dict:
    """Run the loop and return this rank's figures; window times are the slowest rank's.

    A step returns its loss as a float or as a tensor left on the device (arcface_torch_2021 never
    reads its loss); tensors are read after the windows, so the loop adds no host sync of its own.
    Per-step times are host-clock times, the device's step times only where the step waits for the
    device (today's arcface_torch does, in Partial FC's backward); window times are always real.
    `measured` is entered around the timed windows alone (a GPU power sampler, say);
    `after_warmup` runs once between warm-up and the first window (to reset peak memory, say). The
    first warm-up step (with no warm-up, one extra step before the clock starts) has its FLOPs counted.
    `batch_wait_s` returns the seconds the steps since its last call waited for their batches (None
    when nothing is read): the figures get this rank's loader_wait_s per window.
    """
    loss, step_flops = count_flops(step)
    losses = [loss]
    heartbeat()
    for _ in range(warmup_steps - 1):
        losses.append(step())
        heartbeat()
    device.synchronize()
    if after_warmup is not None:
        after_warmup()
    if batch_wait_s is not None:
        batch_wait_s()  # the warm-up's waits
    loader_wait_s = []
    step_times_s = []
    window_times_s = []
    with measured or contextlib.nullcontext():
        for _ in range(num_windows):
            device.synchronize()
            window_start = time.perf_counter()
            for _ in range(steps_per_window):
                step_start = time.perf_counter()
                losses.append(step())
                step_times_s.append(time.perf_counter() - step_start)
                heartbeat()
            device.synchronize()
            window_times_s.append(time.perf_counter() - window_start)
            if batch_wait_s is not None and (wait_s := batch_wait_s()) is not None:
                loader_wait_s.append(wait_s)
    slowest = torch.tensor(window_times_s, dtype=torch.float64, device=device.torch)
    distributed.all_reduce(slowest, distributed.ReduceOp.MAX)
    figures = {"loader_wait_s": loader_wait_s} if loader_wait_s else {}
    return {
        **figures,
        "window_times_s": slowest.tolist(),
        "step_times_s": step_times_s,
        "losses": [float(loss) for loss in losses],
        "step_flops": step_flops,
    }


def prepare_flop_counting() -> None:
    """Import what FlopCounterMode imports on its first use (torch._dynamo, seconds of it) ahead of time.

    So that the counted step is not a long silent one, and the import is not charged to a memory cap.
    """
    import torch._dynamo  # noqa: F401


def in_place_addmm_flops(self_shape, a_shape, b_shape, *args, **kwargs) -> int:
    return mm_flop(a_shape, b_shape)


def conv_backward_flops(grad_out, x, w, bias, stride, padding, dilation, transposed, out_pad, groups, mask, **kwargs):
    """The forward's FLOPs for each gradient computed (of the input, of the weights), whatever the groups."""
    return conv_flop_count(x, w, grad_out, transposed=transposed) * (int(mask[0]) + int(mask[1]))


def flop_counter() -> FlopCounterMode:
    """torch's FLOP counter, taught the in-place addmm_ of fused's backward (it counts addmm only) and the
    backward of a grouped convolution (torch 2.14 counts its weight gradient groups times over: mbf's
    depthwise convolutions; pytorch/pytorch pull 183405)."""
    custom = {torch.ops.aten.addmm_: in_place_addmm_flops, torch.ops.aten.convolution_backward: conv_backward_flops}
    return FlopCounterMode(display=False, custom_mapping=custom)


def count_flops(step: Callable[[], float]) -> tuple[float, int]:
    """Run one step under FlopCounterMode: its loss, and the FLOPs this rank ran in it.

    The counter sees every matmul and convolution of the real step (forward, backward, the
    classifier's GEMMs over the centres this rank holds or sampled), whatever the implementation;
    element-wise work, normalisation and communication are not counted.
    """
    with flop_counter() as counter:
        loss = step()
    return loss, counter.get_total_flops()
