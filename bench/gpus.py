"""The GPU catalogue: each GPU pfcbench knows by name (`pfcbench gpus`, `--gpu NAME`), with its figures.

A GpuSpec holds what a GPU brings to a cell: its memory as the driver reports it (what a job can
have), its dense peak TFLOP/s per precision (the peaks MFU is measured against), its memory
bandwidth, the usual link between the GPUs of an 8-GPU server of it, its power and its SMs.
GPU_RUNTIME holds what a GPU rank takes beyond its tensors, the same on every GPU. The figures
are NVIDIA's (datasheets and whitepapers), each spec naming its source; the memory sizes read
by nvidia-smi come from insightface's published reports (benchmarks/train/*.md).

This module does not import torch.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from bench.units import GIB, MIB

if TYPE_CHECKING:
    from bench.config import Cell


@dataclass(frozen=True, kw_only=True)
class PeakTflops:
    """Dense peak TFLOP/s of one GPU per precision, without sparsity; None where it has no such rate.

    fp16 and bf16 are tensor-core rates with fp32 accumulation, which is what AMP runs (GeForce
    cards run twice as fast with fp16 accumulation, which AMP does not use).
    """

    fp32: float
    tf32: float | None = None
    """Tensor-core TF32; None before Ampere (fp32 with TF32 allowed then runs at the fp32 rate)."""
    fp16: float | None = None
    bf16: float | None = None

    def at(self, precision: str) -> float | None:
        """The peak at a precision (fp32, tf32, fp16, bf16); None where the GPU has none."""
        return getattr(self, precision) if precision in ("fp32", "tf32", "fp16", "bf16") else None


def tensor_peaks(fp32: float, tf32: float, half: float) -> PeakTflops:
    """The peaks of an Ampere or later GPU, whose bf16 rate is its fp16 rate."""
    return PeakTflops(fp32=fp32, tf32=tf32, fp16=half, bf16=half)


LINK_KINDS = ("nvswitch", "nvlink", "pcie")
"""nvswitch: NVLink from every GPU to every other through NVSwitch; nvlink: direct NVLink, not all to all; pcie."""


@dataclass(frozen=True, kw_only=True)
class Link:
    """How the GPUs of a usual 8-GPU server of a card reach each other; GB/s per GPU, both directions."""

    kind: str
    """One of LINK_KINDS."""
    generation: int
    """NVLink's generation for nvswitch and nvlink, PCIe's for pcie."""
    gb_s: float
    p2p: bool
    """Whether NCCL may copy GPU to GPU (peer-to-peer); off, it goes through host memory."""
    bridge_gb_s: float | None = None
    """An NVLink bridge between pairs of GPUs beside PCIe; the other pairs still talk over PCIe."""

    def __post_init__(self) -> None:
        if self.kind not in LINK_KINDS:
            raise ValueError(f"link kind {self.kind!r}: expected one of {', '.join(LINK_KINDS)}")

    def text(self) -> str:
        """The link as the catalogue prints it: "NVLink3 600 GB/s via NVSwitch", "PCIe 4.0 64 GB/s, P2P off"."""
        if self.kind == "nvswitch":
            return f"NVLink{self.generation} {self.gb_s:g} GB/s via NVSwitch"
        if self.kind == "nvlink":
            return f"NVLink{self.generation} {self.gb_s:g} GB/s, not all to all"
        text = f"PCIe {self.generation}.0 {self.gb_s:g} GB/s"
        if self.bridge_gb_s is not None:
            text += f" + NVLink bridge pairs {self.bridge_gb_s:g} GB/s"
        return text if self.p2p else f"{text}, P2P off"


def pcie(generation: int, *, p2p: bool = True, bridge_gb_s: float | None = None) -> Link:
    """A PCIe x16 link: 32 GB/s both directions at generation 3, twice that per generation after."""
    return Link(kind="pcie", generation=generation, gb_s=32 * 2 ** (generation - 3), p2p=p2p, bridge_gb_s=bridge_gb_s)


@dataclass(frozen=True, kw_only=True)
class GpuSpec:
    """One GPU of the catalogue."""

    name: str
    """The name --gpu takes, lower case."""
    model: str
    """NVIDIA's full model name."""
    family: str
    """The words of a device name that find this GPU's peaks (bench.mfu.gpu_model), shared by its variants."""
    device_words: tuple[str, ...] = ()
    """Further words of a device name that tell this GPU from others of its family (memory, form factor)."""
    memory_mib: int
    """Memory as the driver reports it (nvidia-smi's total), less than the marketing size."""
    memory_derived: bool = False
    """Whether memory_mib is derived from a like card's (memory_like) rather than read from a driver."""
    peaks: PeakTflops
    bandwidth_gb_s: float
    link: Link
    tdp_w: int
    num_sms: int
    source: str

    @property
    def memory_gib(self) -> float:
        return self.memory_mib * MIB / GIB

    def to_dict(self) -> dict:
        return asdict(self) | {"memory_gib": self.memory_gib, "link_text": self.link.text()}


def memory_like(nominal_gb: int, *, like: int, like_gb: int) -> int:
    """The memory the driver would report for a card of nominal_gb, in MiB: the share of its nominal
    size that the driver reports on a like card (like MiB of like_gb), read with GB as GiB, rounded down."""
    return nominal_gb * like // like_gb


GA102 = "GA102 whitepaper v2, nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf"
ADA = "Ada whitepaper, images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf"
V100_DATASHEET = (
    "V100 datasheet, images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf"
)
A100_DATASHEET = (
    "A100 datasheet, nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"
)
REPORTS = "insightface benchmarks/train"
"""The published reports, whose gpustat and nvidia-smi lines give the memory the driver reports."""

A100_PEAKS = tensor_peaks(19.5, 156.0, 312.0)
HOPPER_SXM_PEAKS = tensor_peaks(67.0, 494.7, 989.4)

# Driver-reported memory, read from the published reports' nvidia-smi and gpustat lines.
RTX3080_MIB, RTX3090_MIB, V100_SXM2_32GB_MIB, A10_MIB, A30_MIB, A100_80GB_MIB = 10018, 24268, 32510, 22731, 24258, 81251

CATALOGUE = (
    GpuSpec(
        name="rtx3080", model="NVIDIA GeForce RTX 3080 10GB", family="RTX 3080",
        memory_mib=RTX3080_MIB, peaks=tensor_peaks(29.8, 29.8, 59.5), bandwidth_gb_s=760, link=pcie(4, p2p=False),
        tdp_w=320, num_sms=68, source=f"{GA102} (main spec table); memory: {REPORTS}, RTX 3080 report",
    ),
    GpuSpec(
        name="rtx3090", model="NVIDIA GeForce RTX 3090", family="RTX 3090",
        memory_mib=RTX3090_MIB, peaks=tensor_peaks(35.6, 35.6, 71.0), bandwidth_gb_s=936,
        link=pcie(4, p2p=False, bridge_gb_s=112.5), tdp_w=350, num_sms=82,
        source=f"{GA102} (Appendix A); memory: {REPORTS}, RTX 3090 report",
    ),
    GpuSpec(
        name="rtx4090", model="NVIDIA GeForce RTX 4090", family="RTX 4090",
        memory_mib=memory_like(24, like=RTX3090_MIB, like_gb=24), memory_derived=True,
        peaks=tensor_peaks(82.6, 82.6, 165.2), bandwidth_gb_s=1008, link=pcie(4, p2p=False), tdp_w=450, num_sms=128,
        source=f"{ADA}; memory: derived from the RTX 3090's (GeForce GDDR6X)",
    ),
    GpuSpec(
        name="v100-sxm2-32gb", model="NVIDIA Tesla V100-SXM2-32GB", family="V100", device_words=("SXM2", "32GB"),
        memory_mib=V100_SXM2_32GB_MIB, peaks=PeakTflops(fp32=15.7, fp16=125.0), bandwidth_gb_s=900,
        link=Link(kind="nvlink", generation=2, gb_s=300, p2p=True), tdp_w=300, num_sms=80,
        source=f"{V100_DATASHEET}; link: DGX-1 hybrid cube mesh; memory: {REPORTS}, V100 report",
    ),
    GpuSpec(
        name="v100-pcie-32gb", model="NVIDIA Tesla V100-PCIE-32GB", family="V100 PCIe", device_words=("32GB",),
        memory_mib=memory_like(32, like=V100_SXM2_32GB_MIB, like_gb=32), memory_derived=True,
        peaks=PeakTflops(fp32=14.0, fp16=112.0), bandwidth_gb_s=900, link=pcie(3), tdp_w=250, num_sms=80,
        source=f"{V100_DATASHEET}; memory: derived from the V100-SXM2-32GB's (same HBM2)",
    ),
    GpuSpec(
        name="a10", model="NVIDIA A10", family="A10",
        memory_mib=A10_MIB, peaks=tensor_peaks(31.2, 62.5, 125.0), bandwidth_gb_s=600, link=pcie(4),
        tdp_w=150, num_sms=72, source=f"nvidia.com/en-us/data-center/products/a10-gpu/; memory: {REPORTS}, A10 report",
    ),
    GpuSpec(
        name="a30", model="NVIDIA A30", family="A30",
        memory_mib=A30_MIB, peaks=tensor_peaks(10.3, 82.0, 165.0), bandwidth_gb_s=933, link=pcie(4, bridge_gb_s=200),
        tdp_w=165, num_sms=56, source=f"nvidia.com/en-us/data-center/products/a30-gpu/; memory: {REPORTS}, A30 report",
    ),
    GpuSpec(
        name="a100-pcie-80gb", model="NVIDIA A100 80GB PCIe", family="A100", device_words=("80GB", "PCIe"),
        memory_mib=A100_80GB_MIB, peaks=A100_PEAKS, bandwidth_gb_s=1935, link=pcie(4, bridge_gb_s=600),
        tdp_w=300, num_sms=108,
        source=f"{A100_DATASHEET}; memory: {REPORTS}, A100 report (a PCIe chassis, so most likely this card)",
    ),
    GpuSpec(
        name="a100-sxm4-40gb", model="NVIDIA A100-SXM4-40GB", family="A100", device_words=("SXM4", "40GB"),
        memory_mib=memory_like(40, like=A100_80GB_MIB, like_gb=80), memory_derived=True,
        peaks=A100_PEAKS, bandwidth_gb_s=1555, link=Link(kind="nvswitch", generation=3, gb_s=600, p2p=True),
        tdp_w=400, num_sms=108, source=f"{A100_DATASHEET}; memory: derived from the A100 80GB's",
    ),
    GpuSpec(
        name="a100-sxm4-80gb", model="NVIDIA A100-SXM4-80GB", family="A100", device_words=("SXM4", "80GB"),
        memory_mib=memory_like(80, like=A100_80GB_MIB, like_gb=80), memory_derived=True,
        peaks=A100_PEAKS, bandwidth_gb_s=2039, link=Link(kind="nvswitch", generation=3, gb_s=600, p2p=True),
        tdp_w=400, num_sms=108, source=f"{A100_DATASHEET}; memory: derived from the A100 80GB PCIe's (same HBM2e)",
    ),
    GpuSpec(
        name="h100-sxm", model="NVIDIA H100 SXM5 80GB", family="H100", device_words=("80GB",),
        memory_mib=memory_like(80, like=A100_80GB_MIB, like_gb=80), memory_derived=True,
        peaks=HOPPER_SXM_PEAKS, bandwidth_gb_s=3350, link=Link(kind="nvswitch", generation=4, gb_s=900, p2p=True),
        tdp_w=700, num_sms=132, source="nvidia.com/en-us/data-center/h100/; memory: derived from the A100 80GB's",
    ),
    GpuSpec(
        name="h100-pcie", model="NVIDIA H100 PCIe 80GB", family="H100 PCIe",
        memory_mib=memory_like(80, like=A100_80GB_MIB, like_gb=80), memory_derived=True,
        peaks=tensor_peaks(51.0, 378.0, 756.0), bandwidth_gb_s=2000, link=pcie(5, bridge_gb_s=600),
        tdp_w=350, num_sms=114, source="nvidia.com/en-us/data-center/h100/; memory: derived from the A100 80GB's",
    ),
    GpuSpec(
        name="h200", model="NVIDIA H200 SXM 141GB", family="H200",
        memory_mib=memory_like(141, like=A100_80GB_MIB, like_gb=80), memory_derived=True,
        peaks=HOPPER_SXM_PEAKS, bandwidth_gb_s=4800, link=Link(kind="nvswitch", generation=4, gb_s=900, p2p=True),
        tdp_w=700, num_sms=132,
        source="nvidia.com/en-us/data-center/h200/ (TDP up to 700 W); memory: derived from the A100 80GB's",
    ),
    GpuSpec(
        name="l40s", model="NVIDIA L40S", family="L40S",
        memory_mib=memory_like(48, like=A10_MIB, like_gb=24), memory_derived=True,
        peaks=tensor_peaks(91.6, 183.0, 362.0), bandwidth_gb_s=864, link=pcie(4), tdp_w=350, num_sms=142,
        source="nvidia.com/en-us/data-center/l40s/; memory: derived from the A10's (GDDR6 with ECC)",
    ),
)  # fmt: skip
"""The catalogue, in the order `pfcbench gpus` lists it. Link P2P is off on the GeForce cards and
assumed on for the data-centre ones."""

GPUS: dict[str, GpuSpec] = {spec.name: spec for spec in CATALOGUE}

OTHER_PEAKS: dict[str, PeakTflops] = {
    "V100S": PeakTflops(fp32=16.4, fp16=130.0),
    "T4": PeakTflops(fp32=8.1, fp16=65.0),
    "H100 NVL": tensor_peaks(60.0, 417.5, 835.5),
    "B200": tensor_peaks(80.0, 1100.0, 2250.0),
    "L4": tensor_peaks(30.3, 60.0, 121.0),
}
"""Peaks of GPU families MFU knows that the catalogue does not describe, from NVIDIA's datasheets."""

FAMILY_PEAKS: dict[str, PeakTflops] = {spec.family: spec.peaks for spec in CATALOGUE} | OTHER_PEAKS
"""Peak TFLOP/s by the family words of a device name; the variants of a family share its peaks."""


def gpu_named(name: str) -> GpuSpec:
    """The catalogue's GPU of a name, in any case; ValueError naming the GPUs it has where none is."""
    spec = GPUS.get(name.strip().lower())
    if spec is None:
        raise ValueError(unknown_gpu(name))
    return spec


def unknown_gpu(name: str) -> str:
    """What to say of a name that is no GPU of the catalogue: the one it probably meant, and every name."""
    key = name.strip().lower()
    squashed = {gpu.replace("-", ""): gpu for gpu in GPUS}
    near = squashed.get(key.replace("-", "").replace("_", "").replace(" ", "")) or next(
        iter(difflib.get_close_matches(key, GPUS, n=1)), None
    )
    said = f"unknown GPU {name!r}" + (f"; did you mean {near}?" if near else "")
    return f"{said} (pfcbench gpus lists: {', '.join(GPUS)})"


SERVER_DATA = ("records", "synthetic")


@dataclass(frozen=True, kw_only=True)
class Server:
    """A machine of 8 GPUs as the time model sees it: how its GPUs reach each other and what its host brings."""

    name: str
    link: Link
    """The link between its GPUs."""
    pcie_generation: int
    """The host's PCIe generation: a GPU's PCIe link runs at the lower of it and the GPU's."""
    sockets: int = 2
    """CPU sockets its GPUs hang off: a ring over all of them crosses between sockets through host memory."""
    data: str = "synthetic"
    """What its published runs read: records (decoded by the host's CPUs) or synthetic batches."""
    network_gb_s: float = 12.5
    """Between nodes, GB/s per direction per node: one 100 Gb/s link."""
    text: str = ""

    def __post_init__(self) -> None:
        if self.data not in SERVER_DATA:
            raise ValueError(f"server data {self.data!r}: expected one of {', '.join(SERVER_DATA)}")


SERVERS: dict[str, Server] = {
    server.name: server
    for server in (
        Server(
            name="dgx1-v100", link=GPUS["v100-sxm2-32gb"].link, pcie_generation=3,
            text="8x V100-SXM2-32GB, NVLink2 hybrid cube mesh, 2x Xeon Gold 6133, CUDA 10.2 (the V100 report)",
        ),
        Server(
            name="xeon-8255c-pcie3", link=pcie(3, p2p=False), pcie_generation=3,
            text="8 GeForce cards, 2x Xeon Platinum 8255C, PCIe 3.0, P2P off (the RTX 3080 and 3090 reports)",
        ),
        Server(
            name="servmax-g408-x2", link=pcie(3), pcie_generation=3, data="records",
            text="ServMax G408-X2, 2x Xeon Gold 5220R, PCIe 3.0, record files on a SATA SSD (the A10, A30, A100 reports)",
        ),
    )
}  # fmt: skip
"""The servers of insightface's six published reports (benchmarks/train/*.md; hosts in their Test Server Spec)."""


def usual_server(gpu: GpuSpec) -> Server:
    """The GPU's usual 8-GPU server, where none is named: its catalogue link, a host of the link's PCIe generation."""
    generation = gpu.link.generation if gpu.link.kind == "pcie" else 4
    return Server(name=f"8x {gpu.name}", link=gpu.link, pcie_generation=generation, text=f"8x {gpu.model}")


@dataclass(frozen=True, kw_only=True)
class GpuRuntime:
    """Memory a GPU rank holds beyond its tensors; none of it exists on the CPU. The same on every GPU of
    the catalogue: it comes from the software (PyTorch, CUDA, cuDNN, NCCL), not the card.

    Guesses from public figures until calibrated on a GPU (compare a cell's NVML peak with
    its traced tensor bytes): the CUDA context of PyTorch 1.9 with CUDA 11, which made the
    published tables, loads every kernel at start-up (about 1 GiB; PyTorch 2 with lazy module
    loading takes a few hundred MiB); cuDNN's autotuned convolutions (cudnn.benchmark) take a
    workspace; NCCL keeps send and receive buffers per channel. What the caching allocator
    reserves beyond the tensors (rounding, fragmentation) is not a constant: the trace replays
    the step's allocations through a model of it (bench.workload.allocator). With these values
    the model reproduces the RTX 3080 report's Fail pattern at the card's 10018 MiB.
    """

    cuda_context_bytes: int = 1000 * MIB
    """CUDA context, cuBLAS handles and kernels loaded, per process (outside torch's counters)."""
    cudnn_workspace_bytes: int = 256 * MIB
    """cuDNN convolution workspace, for backbones with convolutions."""
    cudnn_fp32_workspace_bytes_per_sample: int = 25 * 10**6
    """More cuDNN workspace per sample of a rank's batch when convolutions run in full fp32 (fp32
    without TF32, as on GPUs before Ampere): the autotuner then picks algorithms whose workspace
    grows with the batch (FFT, Winograd). Calibrated on the one published pair: the A100 report's
    IResNet-50 fp32 row at 128 per GPU shows 18.2 GB with TF32 off and 15.0 GB with it on, the same
    tensors: 3.2 GB, 25 MB per sample."""
    nccl_bytes: int = 256 * MIB
    """NCCL communicator buffers, for cells of more than one rank."""

    def bytes_for(self, cell: Cell) -> int:
        """The GPU-only bytes of a rank of cell, beyond what its tensors reserve."""
        if not cell.on_gpu:
            return 0
        convolutions = cell.backbone != "none"
        workspace = self.cudnn_workspace_bytes if convolutions else 0
        if convolutions and cell.precision == "fp32" and not cell.tf32:
            workspace += self.cudnn_fp32_workspace_bytes_per_sample * cell.per_gpu_batch
        nccl = self.nccl_bytes if cell.launched_ranks > 1 else 0
        return self.cuda_context_bytes + workspace + nccl


GPU_RUNTIME = GpuRuntime()
"""The GPU-only constants the memory model uses; the one place to calibrate them."""
