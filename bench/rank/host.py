"""The machine a benchmark runs on: the host description kept beside every results folder.

`describe_machine` records the host (CPU, memory, GPUs, drivers, library versions) as a
JSON-serialisable dict; `server_spec` turns that dict into the "Test Server Spec" rows of the
arcface_torch speed report. Without NVML the host simply has no GPUs. What the GPUs do while a
cell runs is bench.rank.telemetry's job.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.rank import nvml
from bench.units import GIB, KIB, MIB

_CPUINFO = Path("/proc/cpuinfo")
_MEMINFO = Path("/proc/meminfo")
_OS_RELEASE = Path("/etc/os-release")


def usable_cpus() -> int:
    """The CPUs this process may run on (taskset, a cgroup's cpuset, a Slurm step's binding), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def describe_machine() -> dict[str, Any]:
    """Describe this host for a benchmark record; never raises for missing NVML."""
    cpu_model, cpu_sockets = _cpu_model_and_sockets()
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model,
        "cpu_sockets": cpu_sockets,
        "cpu_cores": psutil.cpu_count(logical=False),
        "cpu_threads": os.cpu_count() or 1,
        "memory_gib": _memory_gib(),
        **_nvml_inventory(),
        **_torch_versions(),
        "python": platform.python_version(),
        "os": _os_pretty_name(),
        "kernel": platform.release(),
    }


def _nvml_inventory() -> dict[str, Any]:
    """GPUs and driver versions as seen by NVML; empty values without NVML."""
    if not nvml.init():
        return {"gpus": [], "gpu_driver": None, "cuda_driver": None}
    try:
        driver = nvml.value(nvml.pynvml.nvmlSystemGetDriverVersion)
        return {
            "gpus": _gpu_inventory(),
            "gpu_driver": nvml.text(driver) if driver is not None else None,
            "cuda_driver": _cuda_version_text(nvml.value(nvml.pynvml.nvmlSystemGetCudaDriverVersion)),
        }
    finally:
        nvml.shutdown()


def gpu_memory_gib() -> float | None:
    """Memory of this machine's smallest GPU in GiB, as NVML sees it; None without a GPU."""
    sizes = [gpu["memory_mib"] for gpu in _nvml_inventory()["gpus"] if gpu["memory_mib"] is not None]
    return min(sizes) * MIB / GIB if sizes else None


def _gpu_inventory() -> list[dict[str, Any]]:
    gpus = []
    for index in range(nvml.value(nvml.pynvml.nvmlDeviceGetCount) or 0):
        handle = nvml.value(nvml.pynvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            continue
        name = nvml.value(nvml.pynvml.nvmlDeviceGetName, handle)
        mem = nvml.value(nvml.pynvml.nvmlDeviceGetMemoryInfo, handle)
        gpus.append(
            {
                "index": index,
                "name": nvml.text(name) if name is not None else "unknown",
                "memory_mib": mem.total // MIB if mem is not None else None,
            }
        )
    return gpus


def _cuda_version_text(version: int | None) -> str | None:
    """NVML's encoded CUDA version (12040) as "12.4"."""
    if not version:
        return None
    return f"{version // 1000}.{version % 1000 // 10}"


def _torch_versions() -> dict[str, Any]:
    """torch's version, the CUDA it was built for, cuDNN and how torch was installed.

    Read from files (torch/version.py, package metadata), because importing torch takes seconds.
    """
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return {"torch": None, "torch_cuda": None, "cudnn": None, "torch_installer": None}
    constants = _module_constants(Path(spec.submodule_search_locations[0]) / "version.py")
    return {
        "torch": constants.get("__version__"),
        "torch_cuda": constants.get("cuda"),
        "cudnn": _cudnn_version(),
        "torch_installer": _installer("torch"),
    }


def _module_constants(path: Path) -> dict[str, Any]:
    """The NAME = constant assignments of a Python file, read without running it."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return {}
    constants = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant):
            constants[target.id] = node.value.value
    return constants


def _cudnn_version() -> str | None:
    """cuDNN's version from the pip wheel (nvidia-cudnn-cu12) or the conda package beside this Python."""
    for name in ("nvidia-cudnn-cu13", "nvidia-cudnn-cu12", "nvidia-cudnn-cu11", "nvidia-cudnn"):
        try:
            return ".".join(metadata.version(name).split(".")[:3])
        except metadata.PackageNotFoundError:
            continue
    conda = sorted(Path(sys.prefix, "conda-meta").glob("cudnn-[0-9]*.json"))
    return conda[-1].name.split("-")[1] if conda else None


def _installer(distribution: str) -> str | None:
    """The tool that installed a package (pip, conda, uv), where its metadata or conda says."""
    try:
        installer = (metadata.distribution(distribution).read_text("INSTALLER") or "").strip()
    except metadata.PackageNotFoundError:
        installer = ""
    if installer:
        return installer
    return "conda" if list(Path(sys.prefix, "conda-meta").glob(f"*{distribution}-[0-9]*.json")) else None


def _cpu_model_and_sockets() -> tuple[str, int]:
    """CPU model name and number of distinct physical packages."""
    model = ""
    sockets: set[str] = set()
    for key, value in _read_key_values(_CPUINFO, ":"):
        if key == "model name" and not model:
            model = value
        elif key == "physical id":
            sockets.add(value)
    return model or platform.processor() or "unknown", max(len(sockets), 1)


def _memory_gib() -> float:
    """Total RAM in GiB from /proc/meminfo, rounded to 0.1; 0.0 when unreadable."""
    for key, value in _read_key_values(_MEMINFO, ":"):
        if key == "MemTotal":
            return round(int(value.split()[0]) * KIB / GIB, 1)
    return 0.0


def _os_pretty_name() -> str:
    for key, value in _read_key_values(_OS_RELEASE, "="):
        if key == "PRETTY_NAME":
            return value.strip("\"'")
    return platform.platform()


def _read_key_values(path: Path, sep: str) -> list[tuple[str, str]]:
    """The "key<sep>value" lines of a text file, stripped; [] if unreadable."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    pairs = []
    for line in lines:
        key, found, value = line.partition(sep)
        if found:
            pairs.append((key.strip(), value.strip()))
    return pairs
