"""The rates of this machine's CPU as a cell's ranks see them, for the time model of a CPU cell.

Run as `python -m bench.rank.probe --rank R --world-size W --store FILE --out FILE [--kinds mbf,iresnet]`,
one process per rank of a cell on this node (bench.host_rates starts them), each with the rank's
threads (OMP_NUM_THREADS): they measure at the same time, sharing the cores as a cell's ranks do,
and then time gloo all-reduces between them over 127.0.0.1. Each rank writes its figures as one
JSON object. The convolutions are timed for the kinds of backbone asked for alone: for 2 ranks on 2
cores of an AVX2 EPYC the probe takes 10 s with mbf's, and 49 s with the IResNets' too, whose bf16
convolutions run slowly on a CPU without bf16 instructions.

What each figure is, in the time model's units (bench.workload.cost counts the same way):

- gemm_flops_s: FLOP/s of an fp32 matrix product the size of a classifier's;
- conv_flops_s: by kind of backbone asked for and precision ("mbf bf16"), FLOP/s of forward and backward
  (3 x 2 x MACs) through the convolutions of its trunk (r18 stands for the IResNets), each timed
  alone on the input it meets at the smoke matrix's per-rank batch, bf16 under autocast as a
  cell's trunk runs;
- elementwise_gb_s: by kind (every kind) and precision, bytes per second of the rest of the trunk (BatchNorm,
  PReLU, forward and backward), timed the same way and counted as cost.py counts activation
  traffic (4 passes of every Conv2d, BatchNorm and PReLU output, 4 bytes an element in fp32, 2 in bf16);
- copy_gb_s: a large copy (read and write), for reference;
- op_s: host time per kernel of a step of arcface_torch's classifier alone on tiny tensors, in a
  process group of this rank alone: the Python, autograd and dispatcher time of each of a step's ops;
- all_reduce_latency_s: what a collective adds to that tiny step run over all the ranks, waits for
  the other ranks included; all_reduce_gb_s: the GB/s per direction a 4 MiB all-reduce reaches
  beyond a 4-byte one's time.

The ranks run in the environment a CPU cell's ranks get (bench.launch.local.cpu_rank_env), a
memory cap's allocator setting included, whose mapping of each large tensor slows them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from bench.config import Cell
from bench.workload.backbones import build_backbone
from bench.workload.base_step import build_step
from bench.workload.synthetic import IMAGE_SIZE

SECONDS_PER_FIGURE = 0.25
"""Wall time each compute figure is timed for, after one untimed call."""
BATCH = 4
"""Images per rank of the layer probes: the smoke matrix's per-rank batch."""
EMBEDDING_SIZE = 512
ACTIVATION_PASSES = 4
"""As bench.workload.cost counts activation traffic."""
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
"""The precisions of a cell's trunk probed, and the type its activations have (fp16 runs too slowly on a
CPU to probe in seconds: a CPU fp16 cell is not predicted)."""
PROBED_BACKBONES = {"iresnet": "r18", "mbf": "mbf"}
"""The backbone whose layers stand for each kind: IResNets of every depth are made of the same blocks."""
TRUNK_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.PReLU)
TINY = {"backbone": "none", "embedding_size": 8, "device": "cpu"}
"""The tiny classifier-only cell whose step op_s and the collectives' latency are taken from (8 classes and
2 samples a rank)."""
TINY_STEPS = 40


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


@dataclass(frozen=True)
class Layer:
    """A Conv2d, BatchNorm2d or PReLU of a backbone's trunk, with its input's shape on the probe's batch."""

    module: nn.Module
    shape: tuple[int, ...]
    outputs: int
    """Elements of its output."""

    @property
    def flops(self) -> int:
        """FLOPs of forward and backward (3 x 2 x MACs); 0 for a layer that is not a convolution."""
        conv = self.module
        if not isinstance(conv, nn.Conv2d):
            return 0
        return 3 * 2 * self.outputs * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]


def call_times(fn: Callable[[], object], calls: int) -> list[float]:
    """Seconds of each of calls calls of fn, after one untimed: as many on every rank, whatever its clock."""
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def layer_s(layer: nn.Module, x: torch.Tensor) -> float:
    """Seconds of forward and backward through one layer on an input x (gradients of input and weights), the
    output's gradient made beforehand as the next layer's backward makes it in a step: the least of two calls
    after one untimed."""
    x.requires_grad_(True)
    with torch.no_grad():
        grad = torch.randn_like(layer(x))
    return min(call_times(lambda: layer(x).backward(grad), 2))


def layers_s(layers: list[Layer], dtype: torch.dtype) -> float:
    """Seconds of forward and backward through each of layers alone, on inputs of dtype; a layer that
    repeats another (the same module settings on the same shape) is timed once and counted each time."""
    alike = Counter((repr(layer.module), layer.shape) for layer in layers)
    first: dict[tuple, nn.Module] = {}
    for layer in layers:
        first.setdefault((repr(layer.module), layer.shape), layer.module)
    return sum(count * layer_s(first[key], torch.randn(*key[1], dtype=dtype)) for key, count in alike.items())


def trunk_layers(backbone: nn.Module) -> list[Layer]:
    """The Conv2d, BatchNorm2d and PReLU layers of backbone, as its forward meets them on BATCH images."""
    layers = []

    def seen(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        layers.append(Layer(module, tuple(inputs[0].shape), output.numel()))

    hooks = [m.register_forward_hook(seen) for m in backbone.modules() if isinstance(m, TRUNK_LAYERS)]
    with torch.no_grad():
        backbone(torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE))
    for hook in hooks:
        hook.remove()
    return layers


def layer_rates(kinds: set[str]) -> tuple[dict[str, float], dict[str, float]]:
    """By kind of backbone and precision: FLOP/s of its convolutions (of the kinds asked for), and activation
    bytes per second of the rest (of every kind).

    Each layer of the backbone's trunk is timed alone on an input of the shape it meets, the
    convolutions' in fp32 (autocast casts them), the rest's in the type the convolutions give; the
    rest's bytes are counted as cost.py counts activations (every Conv2d, BatchNorm and PReLU output).
    """
    flops_s, gb_s = {}, {}
    for kind, name in PROBED_BACKBONES.items():
        layers = trunk_layers(build_backbone(name, EMBEDDING_SIZE).train())
        convs = [layer for layer in layers if layer.flops]
        rest = [layer for layer in layers if not layer.flops]
        flops, elements = sum(layer.flops for layer in convs), sum(layer.outputs for layer in layers)
        for precision, dtype in PRECISIONS.items():
            with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                if kind in kinds:
                    flops_s[f"{kind} {precision}"] = flops / layers_s(convs, torch.float32)
                rest_s = layers_s(rest, dtype)
            gb_s[f"{kind} {precision}"] = ACTIVATION_PASSES * dtype.itemsize * elements / rest_s / 1e9
    return flops_s, gb_s


def copy_gb_s() -> float:
    x = torch.randn(16 * 2**20)
    y = torch.empty_like(x)
    return 2 * x.numel() * x.itemsize / per_call_s(lambda: y.copy_(x)) / 1e9


@contextlib.contextmanager
def process_group(rank: int, world_size: int, store: Path) -> Iterator[None]:
    """A gloo process group of world_size probe processes meeting at a FileStore."""
    dist.init_process_group("gloo", store=dist.FileStore(str(store), world_size), rank=rank, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def tiny_step(rank: int, world_size: int) -> tuple[float, KernelCount]:
    """Median seconds of a tiny classifier-only step of arcface_torch over the process group, and what it runs.

    Every rank runs the same number of steps (TINY_STEPS): a step's collectives wait for every rank's.
    """
    cell = Cell(**TINY, nproc_per_node=world_size, classes=8 * world_size, batch_size=2 * world_size)
    step = build_step(cell, torch.device("cpu"), rank)
    step()
    with KernelCount() as count:
        step()
    return statistics.median(call_times(step, TINY_STEPS)), count


class KernelCount(TorchDispatchMode):
    """Counts the kernels run under it (the ops that reach a backend, past autograd), and the collectives."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0
        self.collectives = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.kernels += 1
        self.collectives += func.namespace == "c10d"
        return func(*args, **(kwargs or {}))


def all_reduce_figures(world_size: int) -> tuple[float, float]:
    """A tiny all-reduce's seconds called back to back, and the GB/s per direction a 4 MiB one reaches beyond it."""
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
    ring_bytes = 2 * (world_size - 1) / world_size * large.numel() * large.itemsize
    return latency, ring_bytes / max(large_s - latency, 1e-9) / 1e9


def measure(rank: int, world_size: int, store: Path, kinds: set[str]) -> dict:
    """This rank's figures: compute measured while the other ranks measure theirs, then gloo between them.

    A collective's latency is what it adds to a step: the tiny step over all ranks less the same step
    alone, per collective (at least a collective's time called back to back, where ranks wait for none).
    """
    torch.manual_seed(rank)
    conv_flops_s, elementwise_gb_s = layer_rates(kinds)
    with process_group(0, 1, store.with_name(f"{store.name}-rank{rank}")):
        alone_s, alone = tiny_step(0, 1)
    figures = {
        "threads": torch.get_num_threads(),
        "gemm_flops_s": gemm_flops_s(),
        "conv_flops_s": conv_flops_s,
        "elementwise_gb_s": elementwise_gb_s,
        "copy_gb_s": copy_gb_s(),
        "op_s": alone_s / alone.kernels,
    }
    if world_size > 1:
        with process_group(rank, world_size, store):
            together_s, together = tiny_step(rank, world_size)
            back_to_back_s, gb_s = all_reduce_figures(world_size)
        in_step_s = (together_s - alone_s) / max(1, together.collectives)
        figures |= {"all_reduce_latency_s": max(in_step_s, back_to_back_s), "all_reduce_gb_s": gb_s}
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--store", type=Path, required=True, help="a FileStore file the ranks share")
    parser.add_argument("--out", type=Path, required=True, help="where this rank writes its figures (JSON)")
    parser.add_argument(
        "--kinds", type=kind_list, default=set(PROBED_BACKBONES), help="kinds of backbone whose convolutions to time"
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # DDP's and autocast's advice on the tiny step, once per rank
    figures = measure(args.rank, args.world_size, args.store, args.kinds)
    args.out.write_text(json.dumps(figures) + "\n")


def kind_list(text: str) -> set[str]:
    """A comma-separated list of PROBED_BACKBONES' kinds; empty for none."""
    kinds = {kind for kind in text.split(",") if kind}
    if unknown := kinds - set(PROBED_BACKBONES):
        raise argparse.ArgumentTypeError(f"unknown kind {sorted(unknown)[0]!r}: one of {', '.join(PROBED_BACKBONES)}")
    return kinds


if __name__ == "__main__":
    main()
