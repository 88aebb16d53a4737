"""What a rank measures about its own hardware while the timed steps run.

`GpuSampler` polls NVML in a background thread during the measured steps for peak memory, mean
power and energy; `cpu_peak_rss_mib` gives this process's peak resident set. Without NVML the
sampler is inert, so the harness runs unchanged on CPU-only machines.
"""

from __future__ import annotations

import resource
import sys
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from bench import nvml

_MIB = 2**20


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
        if self._thread is not None or not nvml.init():
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
            nvml.shutdown()
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
        self.energy_start_mj = nvml.value(nvml.pynvml.nvmlDeviceGetTotalEnergyConsumption, self.handle)
        self.sample()

    def close(self) -> None:
        """Take the last sample and read the energy counter again."""
        self.sample()
        if self.energy_start_mj is not None:
            self.energy_end_mj = nvml.value(nvml.pynvml.nvmlDeviceGetTotalEnergyConsumption, self.handle)

    def sample(self) -> None:
        """Record used memory and, where supported, power draw."""
        mem = nvml.value(nvml.pynvml.nvmlDeviceGetMemoryInfo, self.handle)
        if mem is not None:
            self.mem_used_samples_mib.append(mem.used / _MIB)
        if self.power_supported:
            self._sample_power()

    def _sample_power(self) -> None:
        try:
            power_mw = nvml.pynvml.nvmlDeviceGetPowerUsage(self.handle)
        except nvml.pynvml.NVMLError_NotSupported:
            self.power_supported = False
        except nvml.pynvml.NVMLError:
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
        indices = list(range(nvml.value(nvml.pynvml.nvmlDeviceGetCount) or 0))
    tracks = []
    for index in indices:
        handle = nvml.value(nvml.pynvml.nvmlDeviceGetHandleByIndex, index)
        if handle is not None:
            name = nvml.text(nvml.value(nvml.pynvml.nvmlDeviceGetName, handle) or "unknown")
            tracks.append(_GpuTrack(index=index, handle=handle, name=name))
    return tracks


def _max_or_none(values: list[float]) -> float | None:
    return max(values) if values else None


def _mean_or_none(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
