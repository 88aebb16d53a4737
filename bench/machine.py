"""The machine a benchmark runs on, and what its GPUs did while it ran.

`describe_machine` records the host (CPU, memory, GPUs, drivers, library
versions) as a JSON-serialisable dict; `server_spec` turns that dict into the
"Test Server Spec" rows of the arcface_torch speed report; `GpuSampler` polls
NVML in a background thread during the measured steps for peak memory, mean
power and energy; `cpu_peak_rss_mib` gives this process's peak resident set.

Everything that touches NVML degrades to "no GPUs" instead of raising, so the
harness runs unchanged on CPU-only machines.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

try:
    import pynvml
except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency
    pynvml = None

_MIB = 2**20
_CPUINFO = Path("/proc/cpuinfo")
_MEMINFO = Path("/proc/meminfo")
_OS_RELEASE = Path("/etc/os-release")


def describe_machine() -> dict[str, Any]:
    """Describe this host for a benchmark record; never raises for missing NVML."""
    cpu_model, cpu_sockets = _cpu_model_and_sockets()
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model,
        "cpu_sockets": cpu_sockets,
        "cpu_cores": os.cpu_count() or 1,
        "memory_gib": _memory_gib(),
        **_nvml_inventory(),
        **_torch_versions(),
        "python": platform.python_version(),
        "os": _os_pretty_name(),
        "kernel": platform.release(),
    }


def server_spec(env: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows of the "Test Server Spec" table, from a `describe_machine` dict.

    A list of pairs because "Installation" repeats, as in the published
    arcface_torch report.
    """
    rows = [
        ("CPU", f"{env['cpu_sockets']} x {env['cpu_model']}"),
        ("Memory", f"{round(env['memory_gib'])}GB"),
        ("GPU", _gpu_summary(env.get("gpus") or [])),
        ("OS", env["os"]),
    ]
    if env.get("torch_cuda") and env.get("gpus"):
        rows.append(("Installation", f"CUDA {env['torch_cuda']},"))
    rows.append(("Installation", f"Python {env['python']}"))
    rows.append(("Installation", f"PyTorch {env['torch']} (pip)"))
    return rows


def cpu_peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    per_mib = _MIB if sys.platform == "darwin" else 1024
    return peak / per_mib


class GpuSampler:
    """Polls NVML for this node's GPUs while a benchmark's measured steps run.

    Use as a context manager, or call `start` and `stop`. After stopping,
    `summary()` gives one dict per GPU: peak used memory, mean power draw and
    the energy counter's delta over the window (None where the GPU does not
    report a metric). Without NVML the sampler is inert: `available` is False
    and `summary()` is empty.
    """

    def __init__(self, indices: list[int] | None = None, interval_s: float = 0.1) -> None:
        self.indices = indices
        self.interval_s = interval_s
        self.available = False
        self._tracks: list[_GpuTrack] = []
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml_open = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Open NVML, take the opening readings and start the polling thread."""
        if self._thread is not None or not _nvml_init():
            return self
        self._nvml_open = True
        self._tracks = _open_tracks(self.indices)
        self.available = True
        for track in self._tracks:
            track.open()
        self._halt.clear()
        self._thread = threading.Thread(target=self._poll, name="GpuSampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, take the closing readings and release NVML."""
        if self._thread is not None:
            self._halt.set()
            self._thread.join()
            self._thread = None
            for track in self._tracks:
                track.close()
        if self._nvml_open:
            _nvml_shutdown()
            self._nvml_open = False

    def summary(self) -> list[dict[str, Any]]:
        """Per-GPU results of the sampled window; [] when NVML was unavailable."""
        return [track.summary() for track in self._tracks]

    def _poll(self) -> None:
        while not self._halt.wait(self.interval_s):
            for track in self._tracks:
                track.sample()


@dataclass
class _GpuTrack:
    """The readings of one GPU over a sampling window."""

    index: int
    handle: Any
    name: str
    mem_used_samples_mib: list[float] = field(default_factory=list)
    power_samples_w: list[float] = field(default_factory=list)
    power_supported: bool = True
    energy_start_mj: int | None = None
    energy_end_mj: int | None = None

    def open(self) -> None:
        """Read the energy counter and take the first sample."""
        self.energy_start_mj = _nvml_value(pynvml.nvmlDeviceGetTotalEnergyConsumption, self.handle)
        self.sample()

    def close(self) -> None:
        """Take the last sample and read the energy counter again."""
        self.sample()
        if self.energy_start_mj is not None:
            self.energy_end_mj = _nvml_value(pynvml.nvmlDeviceGetTotalEnergyConsumption, self.handle)

    def sample(self) -> None:
        """Record used memory and, where supported, power draw."""
        mem = _nvml_value(pynvml.nvmlDeviceGetMemoryInfo, self.handle)
        if mem is not None:
            self.mem_used_samples_mib.append(mem.used / _MIB)
        if self.power_supported:
            self._sample_power()

    def _sample_power(self) -> None:
        try:
            power_mw = pynvml.nvmlDeviceGetPowerUsage(self.handle)
        except pynvml.NVMLError_NotSupported:
            self.power_supported = False
        except pynvml.NVMLError:
            pass
        else:
            self.power_samples_w.append(power_mw / 1000.0)

    def summary(self) -> dict[str, Any]:
        """This GPU's peak memory, mean power and energy over the window."""
        return {
            "index": self.index,
            "name": self.name,
            "mem_used_peak_mib": _max_or_none(self.mem_used_samples_mib),
            "power_mean_w": _mean_or_none(self.power_samples_w),
            "energy_j": self._energy_j(),
        }

    def _energy_j(self) -> float | None:
        if self.energy_start_mj is None or self.energy_end_mj is None:
            return None
        return (self.energy_end_mj - self.energy_start_mj) / 1000.0


def _open_tracks(indices: list[int] | None) -> list[_GpuTrack]:
    """One track per requested GPU that NVML can hand out."""
    if indices is None:
        indices = list(range(_nvml_value(pynvml.nvmlDeviceGetCount) or 0))
    tracks = []
    for index in indices:
        handle = _nvml_value(pynvml.nvmlDeviceGetHandleByIndex, index)
        if handle is not None:
            name = _text(_nvml_value(pynvml.nvmlDeviceGetName, handle) or "unknown")
            tracks.append(_GpuTrack(index=index, handle=handle, name=name))
    return tracks


def _nvml_init() -> bool:
    """Initialise NVML; False when the library, driver or module is missing."""
    if pynvml is None:
        return False
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError, OSError):
        return False
    return True


def _nvml_shutdown() -> None:
    try:
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        pass


def _nvml_value(call: Callable[..., Any], *args: Any) -> Any:
    """The result of an NVML call, or None when it reports an NVML error."""
    try:
        return call(*args)
    except pynvml.NVMLError:
        return None


def _nvml_inventory() -> dict[str, Any]:
    """GPUs and driver versions as seen by NVML; empty values without NVML."""
    if not _nvml_init():
        return {"gpus": [], "gpu_driver": None, "cuda_driver": None}
    try:
        driver = _nvml_value(pynvml.nvmlSystemGetDriverVersion)
        return {
            "gpus": _gpu_inventory(),
            "gpu_driver": _text(driver) if driver is not None else None,
            "cuda_driver": _cuda_version_text(_nvml_value(pynvml.nvmlSystemGetCudaDriverVersion)),
        }
    finally:
        _nvml_shutdown()


def gpu_memory_gib() -> float | None:
    """Memory of this machine's smallest GPU in GiB, as NVML sees it; None without a GPU."""
    sizes = [gpu["memory_mib"] for gpu in _nvml_inventory()["gpus"] if gpu["memory_mib"] is not None]
    return min(sizes) * _MIB / 2**30 if sizes else None


def _gpu_inventory() -> list[dict[str, Any]]:
    gpus = []
    for index in range(_nvml_value(pynvml.nvmlDeviceGetCount) or 0):
        handle = _nvml_value(pynvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            continue
        name = _nvml_value(pynvml.nvmlDeviceGetName, handle)
        mem = _nvml_value(pynvml.nvmlDeviceGetMemoryInfo, handle)
        gpus.append(
            {
                "index": index,
                "name": _text(name) if name is not None else "unknown",
                "memory_mib": mem.total // _MIB if mem is not None else None,
            }
        )
    return gpus


def _cuda_version_text(version: int | None) -> str | None:
    """NVML's encoded CUDA version (12040) as "12.4"."""
    if not version:
        return None
    return f"{version // 1000}.{version % 1000 // 10}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _torch_versions() -> dict[str, Any]:
    """Versions of torch, the CUDA it was built with, and cuDNN."""
    import torch

    try:
        cudnn = torch.backends.cudnn.version()
    except RuntimeError:
        cudnn = None
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": cudnn,
    }


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
            return round(int(value.split()[0]) / 2**20, 1)
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


def _gpu_summary(gpus: list[dict[str, Any]]) -> str:
    """The GPU row: "8 x NVIDIA GeForce RTX 3080", one "n x model" per model."""
    if not gpus:
        return "none"
    counts = Counter(gpu["name"] for gpu in gpus)
    return " + ".join(f"{count} x {name}" for name, count in counts.items())


def _max_or_none(values: list[float]) -> float | None:
    return max(values) if values else None


def _mean_or_none(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
