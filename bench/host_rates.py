"""This machine's CPU rates as the time model takes them, so that a CPU cell is predicted like a GPU cell.

`host_rates(ranks, capped, kinds)` runs the probe (bench.rank.probe) once per rank of a cell on this node,
all at once and in the environment the ranks get (threads, and a memory cap's allocator setting),
and caches its figures under $XDG_CACHE_HOME/pfcbench (default ~/.cache/pfcbench), keyed by host,
torch version, ranks and cap; the convolutions of the kinds of backbone asked for are timed, with
those already cached for the key. `predict_cpu_step` predicts a CPU cell with
bench.time_model.predict_step, unchanged, from a spec made of those figures:

- the peak FLOP/s of each precision is the probe's achieved rate of the convolutions of the
  cell's kind of backbone in it (the GEMM rate for a cell without one), so the efficiencies are 1;
- the memory bandwidth is the probe's achieved rate of the backbone's BatchNorm and PReLU layers in
  the cell's precision, in the bytes bench.workload.cost counts, efficiency 1 (a large copy runs faster than
  the step's element-wise kernels do); a CPU core runs one kernel after another, so no memory
  traffic hides behind compute (memory_overlap 0), and the probe's bytes are those of the
  precision (half_activation_traffic 1);
- the launch overhead is the probe's host time per kernel, for the kernels a CPU step runs;
- the link is gloo over loopback: the probe's all-reduce latency and GB/s per direction.

DDP's overlap stays the fitted one. This module does not import torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.config import Cell
from bench.gpus import GpuSpec, Link, PeakTflops, Server
from bench.launch.local import cpu_rank_env
from bench.rank.host import usable_cpus
from bench.rank.output import write_atomic
from bench.time_model import TIME_CONSTANTS, CannotPredict, Constants, StepTime, predict_step
from bench.workload.trace_cache import cache_root, torch_version

CACHE_FILE = "host-rates.json"
PROBE_TIMEOUT_S = 120.0
IRESNETS = ("r18", "r34", "r50", "r100", "r200")


@dataclass(frozen=True, kw_only=True)
class HostRates:
    """What the probe measured on this machine for a cell of `ranks` ranks per node (the mean over its ranks)."""

    ranks: int
    threads: int
    """Threads per rank (OMP_NUM_THREADS), as bench.launch.local gives a CPU cell's ranks."""
    gemm_flops_s: float
    conv_flops_s: dict[str, float]
    """FLOP/s of a trunk's convolutions, forward and backward, by kind of backbone and precision: "mbf bf16";
    the kinds probed alone."""
    elementwise_gb_s: dict[str, float]
    """Activation bytes per second of the rest of the trunk (BatchNorm, PReLU), by kind and precision: every
    kind."""
    copy_gb_s: float
    op_s: float
    all_reduce_latency_s: float = 0.0
    all_reduce_gb_s: float = 0.0
    """GB/s per direction of a gloo all-reduce beyond its latency; 0 for a single rank."""

    @property
    def precisions(self) -> set[str]:
        """The precisions the probe measured: fp32 and bf16."""
        return {key.split()[-1] for key in self.elementwise_gb_s}

    @property
    def kinds(self) -> set[str]:
        """The kinds of backbone whose convolutions the probe timed."""
        return {key.split()[0] for key in self.conv_flops_s}

    def flops_s(self, backbone: str, precision: str) -> float:
        """The FLOP/s a backbone's convolutions reach in a precision; the GEMM rate for no backbone. CannotPredict
        for a kind the probe did not time."""
        kind = block_kind(backbone)
        if kind == "none":
            return self.gemm_flops_s
        if kind not in self.kinds:
            raise CannotPredict(f"the CPU probe timed no {kind} convolutions")
        return self.conv_flops_s[f"{kind} {precision}"]

    def bandwidth_gb_s(self, backbone: str, precision: str) -> float:
        """The bytes per second of a backbone's element-wise work in a precision; for no backbone (the
        classifier's element-wise kernels alone) the mean over the kinds of block."""
        rates = {key: rate for key, rate in self.elementwise_gb_s.items() if key.endswith(f" {precision}")}
        return rates.get(f"{block_kind(backbone)} {precision}", sum(rates.values()) / len(rates))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_ranks(cls, figures: list[dict]) -> HostRates:
        """The mean of each rank's figures."""

        def mean(values: list[float]) -> float:
            return sum(values) / len(values)

        kinds = ("conv_flops_s", "elementwise_gb_s")
        scalars = [f.name for f in dataclasses.fields(cls) if f.name not in ("ranks", "threads", *kinds)]
        return cls(
            ranks=len(figures),
            threads=int(figures[0]["threads"]),
            **{name: {k: mean([f[name][k] for f in figures]) for k in figures[0][name]} for name in kinds},
            **{name: mean([float(f.get(name, 0.0)) for f in figures]) for name in scalars},
        )


def block_kind(backbone: str) -> str:
    """The kind of block a backbone is made of, as the probe names it: iresnet, mbf (none: none)."""
    return "iresnet" if backbone in IRESNETS else backbone


def cell_kinds(cell: Cell) -> set[str]:
    """The kinds of backbone whose convolutions a cell's prediction needs: its backbone's, none without one."""
    return {block_kind(cell.backbone)} - {"none"}


class LoopbackLink(Link):
    """gloo between the ranks of one machine, over 127.0.0.1: the time model reads gb_s / 2 per direction."""

    def __post_init__(self) -> None:
        pass

    def text(self) -> str:
        return f"gloo loopback {self.gb_s / 2:.2g} GB/s per direction"


def cpu_spec(rates: HostRates, cell: Cell) -> GpuSpec:
    """This machine's CPU as the time model's GPU, for a cell (its backbone and precision)."""
    peaks = {precision: rates.flops_s(cell.backbone, precision) / 1e12 for precision in rates.precisions}
    return GpuSpec(
        name="cpu",
        model=f"this machine's CPU, {rates.threads} threads a rank",
        family="CPU",
        memory_mib=0,
        peaks=PeakTflops(**peaks),
        bandwidth_gb_s=rates.bandwidth_gb_s(cell.backbone, cell.precision),
        link=cpu_link(rates),
        tdp_w=0,
        num_sms=0,
        source="bench.rank.probe",
    )


def cpu_link(rates: HostRates) -> Link:
    return LoopbackLink(kind="loopback", generation=0, gb_s=2 * max(rates.all_reduce_gb_s, 1e-9), p2p=True)


def cpu_server(rates: HostRates) -> Server:
    return Server(name="this machine", link=cpu_link(rates), pcie_generation=0, sockets=1, text="gloo on 127.0.0.1")


def cpu_constants(rates: HostRates) -> Constants:
    """The fitted constants with the probe's measured rates in place of the GPU's efficiencies."""
    return dataclasses.replace(
        TIME_CONSTANTS,
        tensor_efficiency=1.0,
        fp32_efficiency=1.0,
        memory_efficiency=1.0,
        memory_overlap=0.0,
        half_activation_traffic=1.0,
        launch_s=rates.op_s,
        all_reduce_latency_s=rates.all_reduce_latency_s,
        link_efficiency=1.0,
    )


def predict_cpu_step(cell: Cell, rates: HostRates) -> StepTime:
    """The step of a CPU cell's rank 0 on this machine, by part; CannotPredict for a precision not probed."""
    if cell.precision not in rates.precisions:
        raise CannotPredict(f"cell {cell.cell_id}: the CPU probe measures no {cell.precision} rate")
    return predict_step(cell, cpu_spec(rates, cell), cpu_server(rates), cpu_constants(rates))


def cache_path() -> Path:
    return cache_root() / CACHE_FILE


def cache_key(ranks: int, capped: bool) -> str:
    """What the figures depend on: this host, its torch, how many ranks share its cores, and a cap's allocator."""
    cap = " capped" if capped else ""
    return f"{socket.gethostname()} torch {torch_version()} ranks {ranks} cpus {usable_cpus()}{cap}"


def cell_rates(cell: Cell, *, fresh: bool = False) -> HostRates:
    """This machine's rates for a CPU cell: its ranks per node, under its memory cap or none, its backbone's
    convolutions."""
    capped = cell.max_memory_gib is not None
    return host_rates(cell.launched_ranks_per_node, capped=capped, kinds=cell_kinds(cell), fresh=fresh)


def host_rates(ranks: int, *, capped: bool = False, kinds: set[str] = frozenset(), fresh: bool = False) -> HostRates:
    """This machine's rates for a cell of `ranks` ranks per node, capped or not, with the convolutions of kinds
    of backbone: cached, or probed (then cached) if fresh, none or lacking one of kinds, the kinds cached
    probed again with them."""
    path, key = cache_path(), cache_key(ranks, capped)
    cached = read_cache(path)
    known = set()
    if not fresh and key in cached:
        try:
            rates = HostRates(**cached[key])
        except TypeError:  # written by another version of this module: probed again
            pass
        else:
            if kinds <= rates.kinds:
                return rates
            known = rates.kinds
    rates = run_probe(ranks, capped, kinds | known)
    cached[key] = rates.to_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(cached, indent=1) + "\n")
    return rates


def read_cache(path: Path) -> dict:
    """The cached figures by key; none where the file is missing or unreadable (it is probed again)."""
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}


def run_probe(ranks: int, capped: bool, kinds: set[str]) -> HostRates:
    """Start one probe process per rank, in the environment a rank of a CPU cell gets, timing the convolutions of
    kinds; RuntimeError if one fails or they take more than PROBE_TIMEOUT_S."""
    env = dict(os.environ, **cpu_rank_env(ranks, capped))
    with tempfile.TemporaryDirectory(prefix="pfcbench-probe-") as folder:
        outs = [Path(folder) / f"rank{rank}.json" for rank in range(ranks)]
        logs = [out.with_suffix(".log") for out in outs]
        procs = []
        for rank, (out, log) in enumerate(zip(outs, logs, strict=True)):
            argv = [sys.executable, "-m", "bench.rank.probe", "--rank", str(rank), "--world-size", str(ranks),
                    "--store", str(Path(folder) / "store"), "--out", str(out), "--kinds", ",".join(sorted(kinds))]  # fmt: skip
            with log.open("wb") as output:
                procs.append(subprocess.Popen(argv, env=env, stdout=output, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for each in procs:
                    each.kill()
                    each.wait()
                raise RuntimeError(f"the CPU probe took more than {PROBE_TIMEOUT_S:g} s") from None
        for proc, log in zip(procs, logs, strict=True):
            if proc.returncode != 0:
                last = log.read_text(errors="replace").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
                raise RuntimeError(f"the CPU probe failed: {last[0]}")
        return HostRates.from_ranks([json.loads(out.read_text()) for out in outs])
