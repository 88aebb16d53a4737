"""How long a cell's step takes on a GPU of the catalogue, without torch: samples/sec before buying the card.

A step of rank 0 is split into parts that add up to it:

- compute: the FLOPs of the matrix products and convolutions (bench.workload.cost) at the GPU's peak for
  the precision each runs in, times an efficiency;
- memory: the bytes the step reads and writes in device memory (bench.workload.cost) at the GPU's
  bandwidth, times an efficiency;
- communication: the collectives over the server's link (ring algorithms), DDP's gradient all-reduce
  partly hidden behind backward, the classifier's collectives not at all;
- fixed: a launch overhead per kernel, the kernels counted from the backbone's blocks;
- data: the wait for record decoding by the DataLoader workers on the host's CPUs, where it outruns
  the GPU (record cells only).

The constants are global: none belongs to a GPU or a cell. They were fitted on the published figures
of insightface's six reports by benchmarks/time_published.py, which prints the model's error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from bench.config import Cell
from bench.gpus import SERVERS, GpuSpec, Link, Server, pcie, usual_server
from bench.workload.cost import Collective, step_cost


@dataclass(frozen=True, kw_only=True)
class Constants:
    """The model's global constants; TIME_CONSTANTS holds the fitted ones."""

    tensor_efficiency: float
    """Share of the tensor-core peak (fp16, bf16, tf32) the convolutions and GEMMs reach."""
    fp32_efficiency: float
    """Share of the plain fp32 peak they reach without tensor cores."""
    memory_efficiency: float
    """Share of the memory bandwidth the element-wise kernels reach."""
    memory_overlap: float
    """Memory time hidden per second of compute: convolutions and GEMMs read and write while they compute."""
    launch_s: float
    """Host time per kernel launched (Python, dispatcher, driver), not hidden by the GPU's work."""
    all_reduce_latency_s: float
    """Time per collective call beyond its bytes."""
    link_efficiency: float
    """Share of a link's bandwidth per direction a ring collective reaches."""
    ddp_overlap: float
    """Share of DDP's gradient all-reduce hidden behind backward."""
    half_activation_traffic: float
    """Activation traffic of an fp16 or bf16 trunk as a share of what cost.py counts (2 bytes an element):
    above 1 where autocast's casts and fp32 statistics add to it."""
    decode_s_per_sample: float
    """CPU time of one DataLoader worker to read, decode and augment one record image."""

    def to_dict(self) -> dict:
        return asdict(self)


# Fitted by benchmarks/time_published.py on the six reports' published figures (its output:
# benchmarks/time_published.md). fp32_efficiency and all_reduce_latency_s sit at the edge of their range.
TIME_CONSTANTS = Constants(
    tensor_efficiency=0.3889,
    fp32_efficiency=0.9988,
    memory_efficiency=0.2609,
    memory_overlap=0.7455,
    launch_s=1.49e-05,
    all_reduce_latency_s=0.0005,
    link_efficiency=0.4504,
    ddp_overlap=0.5876,
    half_activation_traffic=1.114,
    decode_s_per_sample=0.001702,
)


@dataclass(frozen=True, kw_only=True)
class Fitted:
    """What TIME_CONSTANTS were fitted on, and how far off the model is there."""

    leave_one_gpu_out_mape: float
    """Mean absolute percentage error over the published figures, each report predicted by constants fitted on
    the other five: the error to expect on a GPU the fit has not seen."""
    leave_one_gpu_out_by_gpu: dict[str, float]
    """The same per report, by its card (catalogue name): the report predicted by the constants of the other five."""
    leave_one_gpu_out_worst_by_gpu: dict[str, float]
    """The largest absolute percentage error of one figure of each report, predicted so, by its card."""
    in_sample_mape: float
    gpus: tuple[str, ...]
    """The cards of the reports (catalogue names)."""
    links: tuple[str, ...]
    """The links of their servers (LINK_NAMES)."""
    precisions: tuple[str, ...]
    ranges: dict[str, tuple[int, int]]
    """Cell field: the least and the most value among the published figures."""


# Written by benchmarks/time_published.py beside its output (benchmarks/time_published.md).
FIT = Fitted(
    leave_one_gpu_out_mape=14.2,
    leave_one_gpu_out_by_gpu={
        "rtx3080": 5.4,
        "rtx3090": 10.1,
        "v100-sxm2-32gb": 21.6,
        "a10": 11.6,
        "a30": 6.0,
        "a100-pcie-80gb": 20.0,
    },
    leave_one_gpu_out_worst_by_gpu={
        "rtx3080": 11.9,
        "rtx3090": 18.6,
        "v100-sxm2-32gb": 41.6,
        "a10": 17.6,
        "a30": 15.9,
        "a100-pcie-80gb": 113.8,
    },
    in_sample_mape=7.3,
    gpus=("a10", "a100-pcie-80gb", "a30", "rtx3080", "rtx3090", "v100-sxm2-32gb"),
    links=("nvlink", "pcie3", "pcie3-nop2p"),
    precisions=("fp16", "fp32"),
    ranges={"classes": (617970, 80000000), "batch_size": (512, 10240), "world_size": (8, 8), "nnodes": (1, 1)},
)

FITTED_SOFTWARE = "PyTorch 1.9 with CUDA 11.1 (10.2 on the V100), as the six published reports ran"
"""The software the fitted constants describe: the stack of insightface's published reports."""

BLOCKS: dict[str, int] = {"r18": 8, "r34": 16, "r50": 24, "r100": 49, "r200": 98, "mbf": 20, "none": 0}
"""Residual blocks of each backbone (IResNet: bench.workload.backbones.IRESNET_LAYERS; MobileFaceNet's 13
depthwise blocks of three conv layers, weighed as IResNet blocks)."""
KERNELS_PER_BLOCK = 60
"""Kernels a block launches in a step: forward (3 BN, 2 conv, PReLU, add), about twice that in backward,
and SGD's per-parameter loop over its 9 parameter tensors."""
CLASSIFIER_KERNELS = 80
"""Kernels of the classifier, the loss, the collectives and the step's bookkeeping."""
CPU_KERNELS_PER_BLOCK = 140
"""Kernels a block launches in a step on the CPU, where SGD and gradient clipping loop over each parameter
instead of PyTorch's multi-tensor kernels (counted on real steps: about 157 an IResNet block, 125 a
MobileFaceNet one)."""
CPU_CLASSIFIER_KERNELS = 170
"""Kernels of a CPU step without a backbone (counted on real steps: 158 to 210 by impl)."""


@dataclass(frozen=True, kw_only=True)
class StepTime:
    """A predicted step of rank 0, in seconds by part; the parts add up to step_s."""

    compute_s: float
    memory_s: float
    communication_s: float
    """Communication not hidden behind backward."""
    fixed_s: float
    data_s: float
    """Time the GPU waits for record decoding."""
    batch_size: int

    @property
    def step_s(self) -> float:
        return self.compute_s + self.memory_s + self.communication_s + self.fixed_s + self.data_s

    @property
    def samples_per_s(self) -> float:
        return self.batch_size / self.step_s

    def parts_ms(self) -> dict[str, float]:
        return {
            "compute": 1e3 * self.compute_s,
            "memory": 1e3 * self.memory_s,
            "communication": 1e3 * self.communication_s,
            "fixed": 1e3 * self.fixed_s,
            "data": 1e3 * self.data_s,
        }


def flop_rate(gpu: GpuSpec, precision: str, tf32: bool, constants: Constants) -> float:
    """FLOP/s a GEMM or convolution reaches at precision (fp32 with TF32 allowed or not)."""
    if precision in ("fp16", "bf16") and gpu.peaks.at(precision):
        return gpu.peaks.at(precision) * 1e12 * constants.tensor_efficiency
    if precision == "fp32" and tf32 and gpu.peaks.tf32:
        return gpu.peaks.tf32 * 1e12 * constants.tensor_efficiency
    return gpu.peaks.fp32 * 1e12 * constants.fp32_efficiency


def classifier_precision(cell: Cell) -> str:
    """The precision of the classifier's GEMMs: fp16 for the 2022 program's fp16 rows, else fp32."""
    return cell.precision if cell.impl == "arcface_torch_2022" else "fp32"


def link_gb_s(server: Server, nnodes: int) -> float:
    """GB/s per direction of the slowest hop of a ring over the job's GPUs."""
    link = server.link
    if link.kind == "pcie":
        gb_s = 16.0 * 2 ** (min(link.generation, server.pcie_generation) - 3)
        # through host memory (P2P off, or between sockets, where NCCL does not copy GPU to GPU by default)
        # every byte crosses PCIe twice
        gb_s = gb_s if link.p2p and server.sockets == 1 else gb_s / 2
    else:
        gb_s = link.gb_s / 2
    return min(gb_s, server.network_gb_s) if nnodes > 1 else gb_s


RING_FACTOR = {"all_reduce": 2.0, "all_gather": 1.0, "reduce": 1.0, "reduce_scatter": 1.0}
"""Bytes a ring sends per byte of the collective's tensor, times (W - 1) / W."""


def collective_s(collective: Collective, world: int, gb_s: float, constants: Constants) -> float:
    """Seconds of a collective's calls in a step over a ring of world ranks."""
    if world == 1:
        return 0.0
    share = RING_FACTOR[collective.kind] * (world - 1) / world
    seconds = share * collective.total_bytes / (gb_s * 1e9 * constants.link_efficiency)
    return seconds + collective.calls * constants.all_reduce_latency_s


def predict_step(cell: Cell, gpu: GpuSpec, server: Server, constants: Constants = TIME_CONSTANTS) -> StepTime:
    """The step of cell's rank 0 on gpu in server, by part."""
    cost = step_cost(cell)
    backbone_s = cost.backbone.flops / flop_rate(gpu, cell.precision, cell.tf32, constants)
    compute_s = backbone_s + cost.classifier.flops / flop_rate(gpu, classifier_precision(cell), cell.tf32, constants)
    num_bytes = cost.num_bytes
    if cell.precision in ("fp16", "bf16"):
        num_bytes += (constants.half_activation_traffic - 1) * cost.backbone.bytes_moved["activations"]
    memory_s = num_bytes / (gpu.bandwidth_gb_s * 1e9 * constants.memory_efficiency)
    memory_s = max(0.0, memory_s - constants.memory_overlap * compute_s)
    gb_s = link_gb_s(server, cell.nnodes)
    world = cell.world_size
    ddp_s = sum(collective_s(c, world, gb_s, constants) for c in cost.backbone.collectives)
    classifier_s = sum(collective_s(c, world, gb_s, constants) for c in cost.classifier.collectives)
    # backward is two thirds of the backbone's FLOPs; DDP's buckets go out while it runs
    communication_s = max(0.0, ddp_s - constants.ddp_overlap * 2 / 3 * backbone_s) + classifier_s
    fixed_s = step_kernels(cell) * constants.launch_s
    busy_s = compute_s + memory_s + communication_s + fixed_s
    data_s = 0.0
    if cell.data == "records":  # the workers decode the next batch while the GPU runs this one
        decode_s = cell.per_gpu_batch * constants.decode_s_per_sample / max(1, cell.num_workers)
        data_s = max(0.0, decode_s - busy_s)
    return StepTime(
        compute_s=compute_s,
        memory_s=memory_s,
        communication_s=communication_s,
        fixed_s=fixed_s,
        data_s=data_s,
        batch_size=cell.batch_size,
    )


def step_kernels(cell: Cell) -> int:
    """Kernels a step of the cell's rank launches, on a GPU or on the CPU."""
    if cell.on_gpu:
        return KERNELS_PER_BLOCK * BLOCKS[cell.backbone] + CLASSIFIER_KERNELS
    return CPU_KERNELS_PER_BLOCK * BLOCKS[cell.backbone] + CPU_CLASSIFIER_KERNELS


def predict_samples_per_s(cell: Cell, gpu: GpuSpec, server: Server, constants: Constants = TIME_CONSTANTS) -> float:
    return predict_step(cell, gpu, server, constants).samples_per_s


def mape(predicted: list[float], measured: list[float]) -> float:
    """Mean absolute percentage error of predicted against measured, in percent."""
    return 100 * sum(abs(p - m) / m for p, m in zip(predicted, measured, strict=True)) / max(1, len(measured))


GPUS_PER_SERVER = 8
"""GPUs in a server of the model: the reports' servers and every usual server hold 8."""
MAX_NODES = 1024
"""Most nodes a prediction takes: the model's ring over one 100 Gb/s link per node says nothing of a larger network."""
PCIE_GENERATIONS = (3, 4, 5)
LINK_NAMES = (
    "nvswitch",
    "nvlink",
    "nvlink-bridge",
    *(f"pcie{generation}{p2p}" for generation in PCIE_GENERATIONS for p2p in ("", "-nop2p")),
)
"""What --link takes: NVLink through NVSwitch, direct NVLink (not all to all), NVLink bridges joining pairs of
GPUs, PCIe by generation with peer-to-peer copies on or off (-nop2p: through host memory)."""


class CannotPredict(ValueError):
    """A cell, GPU or link the time model has no prediction for; one line."""


def link_name(link: Link) -> str:
    """The name --link gives a link of the catalogue: nvswitch, nvlink, pcie4, pcie3-nop2p (a bridge not counted)."""
    return f"pcie{link.generation}{'' if link.p2p else '-nop2p'}" if link.kind == "pcie" else link.kind


def gpu_link(name: str, gpu: GpuSpec) -> Link | None:
    """The link a name means between GPUs of this kind; None where such GPUs have no such link."""
    own = gpu.link
    if name.startswith("pcie"):
        generation = int(name[len("pcie")])
        if own.kind == "pcie" and generation > own.generation:
            return None  # the card's own PCIe generation caps it
        return pcie(generation, p2p=not name.endswith("-nop2p"))
    if name == "nvlink-bridge":
        if own.bridge_gb_s is None:
            return None
        # the bridges of PCIe 4.0 cards are NVLink3, those of PCIe 5.0 cards NVLink4
        return Link(kind="nvlink", generation=own.generation - 1, gb_s=own.bridge_gb_s, p2p=True)
    if own.kind == "pcie":
        return None
    return Link(kind=name, generation=own.generation, gb_s=own.gb_s, p2p=True)


def links_of(gpu: GpuSpec) -> list[str]:
    """The names of the links GPUs of this kind can have."""
    return [name for name in LINK_NAMES if gpu_link(name, gpu) is not None]


def check_link_name(name: str) -> str:
    """The link name in lower case; CannotPredict listing the known ones for a name that is none."""
    key = name.strip().lower()
    if key not in LINK_NAMES:
        raise CannotPredict(f"unknown link {name!r} (links: {', '.join(LINK_NAMES)})")
    return key


@dataclass(frozen=True, kw_only=True)
class Target:
    """What cells are predicted on: a GPU of the catalogue in a server, the link between its GPUs by name."""

    gpu: GpuSpec
    server: Server
    link: str
    """The link's name (LINK_NAMES)."""

    @property
    def link_text(self) -> str:
        link = self.server.link
        if self.link == "nvlink-bridge":
            return f"NVLink{link.generation} bridges {link.gb_s:g} GB/s joining pairs of GPUs"
        return link.text()

    def to_dict(self) -> dict:
        return {
            "gpu": self.gpu.name,
            "server": self.server.name,
            "server_text": self.server.text,
            "link": self.link,
            "link_text": self.link_text,
            "network_gb_s": self.server.network_gb_s,
        }

    def check(self, cell: Cell) -> None:
        """CannotPredict, one line naming the cell, where the server or the GPU cannot run it."""
        said = f"cell {cell.cell_id} ({cell.nnodes} x {cell.nproc_per_node} ranks, {cell.precision})"
        if self.link == "nvlink-bridge" and cell.nproc_per_node > 2:
            raise CannotPredict(f"{said}: an NVLink bridge joins 2 GPUs; give --nproc 2 or 1, or another --link")
        if cell.nproc_per_node > GPUS_PER_SERVER:
            raise CannotPredict(
                f"{said}: a server holds {GPUS_PER_SERVER} GPUs; give --nproc {GPUS_PER_SERVER} or less"
            )
        if cell.nnodes > MAX_NODES:
            raise CannotPredict(
                f"{said}: the time model takes 1 to {MAX_NODES} nodes; give --nnodes {MAX_NODES} or less"
            )
        if cell.precision != "fp32" and not self.gpu.peaks.at(cell.precision):
            raise CannotPredict(f"{said}: {self.gpu.name} has no {cell.precision} rate; predict it in fp16 or fp32")

    def predict(self, cell: Cell) -> StepTime:
        """The step of cell's rank 0 on this target; CannotPredict where the model has none."""
        self.check(cell)
        try:
            return predict_step(cell, self.gpu, self.server)
        except (KeyError, ValueError, ZeroDivisionError) as exc:
            raise CannotPredict(f"cell {cell.cell_id}: the time model cannot predict it ({exc})") from None

    def extrapolated(self, cell: Cell) -> list[str]:
        """What of the prediction lies outside the published reports the constants were fitted on."""
        outside = []
        if self.gpu.name not in FIT.gpus:
            outside.append(f"GPU {self.gpu.name}")
        if self.link not in FIT.links:
            outside.append(f"link {self.link}")
        if cell.precision not in FIT.precisions:
            outside.append(f"precision {cell.precision}")
        for name, (least, most) in FIT.ranges.items():
            value = getattr(cell, name)
            if not least <= value <= most:
                outside.append(f"{name.replace('_', ' ')} {value:,}")
        return outside


def target_for(gpu: GpuSpec, report: dict, link: str | None = None) -> Target:
    """Where a matrix's cells are predicted on gpu: its report's server when gpu is its card and no link is named,
    else the GPU's usual 8-GPU server, its link replaced by the one named. CannotPredict for a link the GPU lacks."""
    if link is None and report.get("gpu") == gpu.name and report.get("server") in SERVERS:
        server = SERVERS[report["server"]]
        return Target(gpu=gpu, server=server, link=link_name(server.link))
    usual = usual_server(gpu)
    if link is None:
        return Target(gpu=gpu, server=usual, link=link_name(gpu.link))
    name = check_link_name(link)
    chosen = gpu_link(name, gpu)
    if chosen is None:
        raise CannotPredict(
            f"--link {name}: no {gpu.name} server has it (links of {gpu.name}: {', '.join(links_of(gpu))})"
        )
    generation = chosen.generation if chosen.kind == "pcie" else usual.pcie_generation
    server = replace(usual, name=f"{usual.name} over {name}", link=chosen, pcie_generation=generation)
    return Target(gpu=gpu, server=server, link=name)
