"""The rates of this machine's CPU as a cell's ranks see them, for the time model of a CPU cell.

Run as `python -m bench.rank.probe --rank R --world-size W --store FILE --out FILE`, one process per
rank of a cell on this node (bench.host_rates starts them), each with the rank's threads
(OMP_NUM_THREADS): they measure at the same time, sharing the cores as a cell's ranks do, and
then time gloo all-reduces between them over 127.0.0.1. Each rank writes its figures as one JSON
object. A few seconds in all.

What each figure is, in the time model's units (bench.workload.cost counts the same way):

- gemm_flops_s: FLOP/s of an fp32 matrix product the size of a classifier's;
- conv_flops_s: by kind of backbone, FLOP/s of forward and backward (3 x 2 x MACs) through the
  convolutions of one of its blocks (IResNet's two 3x3; MobileFaceNet's 1x1, depthwise 3x3, 1x1)
  at the smoke matrix's per-rank batch;
- elementwise_gb_s: by kind, bytes per second of the rest of that block (BatchNorm, PReLU, forward
  and backward), counted as cost.py counts activation traffic (4 passes of 4 bytes per element of
  every Conv2d, BatchNorm and PReLU output);
- copy_gb_s: a large copy (read and write), for reference;
- op_s: host time of one kernel of a tiny autograd op (forward and backward), the launch overhead;
- all_reduce_latency_s and all_reduce_gb_s: a 4-byte all-reduce's time, and the GB/s per
  direction a 4 MiB all-reduce reaches beyond it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

SECONDS_PER_FIGURE = 0.25
"""Wall time each compute figure is timed for, after one untimed call."""
BATCH = 4
"""Images per rank of the block probes: the smoke matrix's per-rank batch."""
ACTIVATION_PASSES, FLOAT_BYTES = 4, 4
"""As bench.workload.cost counts activation traffic."""


def per_call_s(fn: Callable[[], object], seconds: float = SECONDS_PER_FIGURE) -> float:
    """Median seconds of one call of fn, over calls in batches until seconds have passed."""
    fn()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_flops_s() -> float:
    a, b = torch.randn(512, 512), torch.randn(512, 1024)
    return 2 * 512 * 512 * 1024 / per_call_s(lambda: a @ b)


def train_rate(layers: nn.Module, shape: tuple[int, ...]) -> float:
    """Seconds of forward and backward through layers on a batch of shape (gradients of input and weights)."""
    x = torch.randn(*shape, requires_grad=True)

    def step() -> None:
        layers(x).sum().backward()

    return per_call_s(step)


def conv_macs(layers: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-adds of the Conv2d layers of layers on a batch of shape."""
    macs = 0

    def count(module: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        macs += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]

    hooks = [m.register_forward_hook(count) for m in layers.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        layers(torch.randn(*shape))
    for hook in hooks:
        hook.remove()
    return macs


def unit(conv: nn.Conv2d, *, prelu: bool = True) -> list[nn.Module]:
    """A convolution and what follows it in a backbone: BatchNorm, and PReLU where one follows."""
    return [conv, nn.BatchNorm2d(conv.out_channels), *([nn.PReLU(conv.out_channels)] if prelu else [])]


def blocks() -> dict[str, tuple[nn.Sequential, tuple[int, ...]]]:
    """A block of each kind of backbone, where the cells' backbones have one: IResNet's two 3x3
    convolutions; MobileFaceNet's 1x1, depthwise 3x3 and linear 1x1."""
    iresnet = nn.Sequential(
        *unit(nn.Conv2d(64, 64, 3, padding=1, bias=False)),
        *unit(nn.Conv2d(64, 64, 3, padding=1, bias=False), prelu=False),
    )
    mbf = nn.Sequential(
        *unit(nn.Conv2d(128, 128, 1, bias=False)),
        *unit(nn.Conv2d(128, 128, 3, padding=1, groups=128, bias=False)),
        *unit(nn.Conv2d(128, 128, 1, bias=False), prelu=False),
    )
    return {"iresnet": (iresnet, (BATCH, 64, 56, 56)), "mbf": (mbf, (BATCH, 128, 28, 28))}


def activations(block: nn.Sequential, shape: tuple[int, ...]) -> int:
    """Elements of the outputs of a block's layers on a batch of shape."""
    count, x = 0, torch.randn(*shape)
    with torch.no_grad():
        for layer in block:
            x = layer(x)
            count += x.numel()
    return count


def block_rates() -> tuple[dict[str, float], dict[str, float]]:
    """By kind of block: FLOP/s of its convolutions alone, and activation bytes per second of the rest.

    The block is timed whole and its convolutions alone; the difference is its element-wise work,
    its bytes counted as cost.py counts activations (every Conv2d, BatchNorm and PReLU output).
    """
    flops_s, gb_s = {}, {}
    for kind, (block, shape) in blocks().items():
        convs = nn.Sequential(*(m for m in block if isinstance(m, nn.Conv2d)))
        conv_s, block_s = train_rate(convs, shape), train_rate(block, shape)
        flops_s[kind] = 3 * 2 * conv_macs(convs, shape) / conv_s
        counted = ACTIVATION_PASSES * FLOAT_BYTES * activations(block, shape)
        gb_s[kind] = counted / max(block_s - conv_s, 0.05 * block_s) / 1e9
    return flops_s, gb_s


def copy_gb_s() -> float:
    x = torch.randn(16 * 2**20)
    y = torch.empty_like(x)
    return 2 * x.numel() * FLOAT_BYTES / per_call_s(lambda: y.copy_(x)) / 1e9


def op_s(num_ops: int = 50) -> float:
    """Host time per kernel: a chain of tiny multiplies, forward and backward (two kernels each)."""
    x = torch.ones(4, requires_grad=True)

    def chain() -> None:
        y = x
        for _ in range(num_ops):
            y = y * 1.0
        y.sum().backward()

    return per_call_s(chain) / (2 * num_ops)


def all_reduce_figures(world_size: int) -> dict[str, float]:
    """A tiny all-reduce's seconds, and the GB/s per direction a 4 MiB one reaches beyond that latency."""
    small, large = torch.zeros(1), torch.zeros(2**20)

    def timed(tensor: torch.Tensor, calls: int) -> float:
        dist.barrier()
        start = time.perf_counter()
        for _ in range(calls):
            dist.all_reduce(tensor)
        return (time.perf_counter() - start) / calls

    timed(large, 2)
    latency = timed(small, 200)
    large_s = timed(large, 10)
    ring_bytes = 2 * (world_size - 1) / world_size * large.numel() * FLOAT_BYTES
    return {"all_reduce_latency_s": latency, "all_reduce_gb_s": ring_bytes / max(large_s - latency, 1e-9) / 1e9}


def measure(rank: int, world_size: int, store: Path) -> dict:
    """This rank's figures: compute measured while the other ranks measure theirs, then gloo between them."""
    torch.manual_seed(rank)
    conv_flops_s, elementwise_gb_s = block_rates()
    figures = {
        "threads": torch.get_num_threads(),
        "gemm_flops_s": gemm_flops_s(),
        "conv_flops_s": conv_flops_s,
        "elementwise_gb_s": elementwise_gb_s,
        "copy_gb_s": copy_gb_s(),
        "op_s": op_s(),
    }
    if world_size > 1:
        file_store = dist.FileStore(str(store), world_size)
        dist.init_process_group("gloo", store=file_store, rank=rank, world_size=world_size)
        try:
            figures |= all_reduce_figures(world_size)
        finally:
            dist.destroy_process_group()
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--store", type=Path, required=True, help="a FileStore file the ranks share")
    parser.add_argument("--out", type=Path, required=True, help="where this rank writes its figures (JSON)")
    args = parser.parse_args(argv)
    figures = measure(args.rank, args.world_size, args.store)
    args.out.write_text(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
