"""What a rank measures about its own hardware while the timed steps run.

`GpuSampler` polls NVML in a background thread during the measured steps for peak memory, mean
power and energy, finding each GPU by its UUID; `cpu_peak_rss_mib` gives this process's peak
resident set. Without NVML the
sampler is inert, so the harness runs unchanged on CPU-only machines.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from bench.rank import nvml
from bench.units import MIB


def cpu_peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    per_mib = MIB if sys.platform == "darwin" else 1024
    return peak / per_mib


class GpuSampler:
    """Polls NVML for the given GPUs while a benchmark's measured steps run.

    GPUs are named by UUID (what CUDA reports for a device), never by index: CUDA's numbering
    differs from NVML's under CUDA_VISIBLE_DEVICES, MIG, Slurm's device isolation and containers.
    Use as a context manager, or call `start` and `stop`. After stopping, `summary()` gives one
    dict per GPU: peak used memory, mean power and the energy counter's delta over the window
    (None where the GPU does not report a metric); a UUID that NVML does not know reads
    "unsupported". Without NVML the sampler is inert: `available` is False and `summary()` is empty.
    """

    def __init__(self, uuids: list[str], interval_s: float = 0.1) -> None:
        self.uuids = uuids
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
        handles = _handles_by_uuid()
        self._tracks = [
            _GpuTrack(uuid=u, handle=handles[_bare_uuid(u)]) for u in self.uuids if _bare_uuid(u) in handles
        ]
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
        """Per-GPU results of the sampled window, in the order asked; [] when NVML was unavailable."""
        if not self.available:
            return []
        found = {track.uuid: track.summary() for track in self._tracks}
        return [found.get(uuid) or _unsupported(uuid) for uuid in self.uuids]

    def _poll(self) -> None:
        while not self._halt.wait(self.interval_s):
            for track in self._tracks:
                track.sample()


@dataclass
class _GpuTrack:
    """The readings of one GPU over a sampling window."""

    uuid: str
    handle: Any
    mem_used_samples_mib: list[float] = field(default_factory=list)
    power_samples_w: list[float] = field(default_factory=list)
    power_supported: bool = True
    energy_start_mj: int | None = None
    energy_end_mj: int | None = None
    opened_at_s: float = 0.0
    closed_at_s: float = 0.0

    def open(self) -> None:
        """Read the energy counter and take the first sample."""
        self.energy_start_mj = nvml.value(nvml.pynvml.nvmlDeviceGetTotalEnergyConsumption, self.handle)
        self.opened_at_s = time.monotonic()
        self.sample()

    def close(self) -> None:
        """Take the last sample and read the energy counter again."""
        self.sample()
        if self.energy_start_mj is not None:
            self.energy_end_mj = nvml.value(nvml.pynvml.nvmlDeviceGetTotalEnergyConsumption, self.handle)
        self.closed_at_s = time.monotonic()

    def sample(self) -> None:
        """Record used memory and, where supported, power draw."""
        mem = nvml.value(nvml.pynvml.nvmlDeviceGetMemoryInfo, self.handle)
        if mem is not None:
            self.mem_used_samples_mib.append(mem.used / MIB)
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
        """This GPU's peak memory, mean power and energy over the window.

        Mean power is the energy counter's delta over the window's length where the GPU has the
        counter: NVML's power reading is a one-second average on Ampere and newer, so polled
        readings miss the edges of a short window. Without the counter, the polled mean.
        """
        energy_j = self._energy_j()
        window_s = self.closed_at_s - self.opened_at_s
        by_energy = energy_j is not None and window_s > 0
        name = nvml.value(nvml.pynvml.nvmlDeviceGetName, self.handle)
        return {
            "uuid": self.uuid,
            "name": nvml.text(name) if name is not None else "unknown",
            "nvml": "ok",
            "mem_used_peak_mib": _max_or_none(self.mem_used_samples_mib),
            "power_mean_w": energy_j / window_s if by_energy else _mean_or_none(self.power_samples_w),
            "power_source": "energy counter" if by_energy else "power samples" if self.power_samples_w else None,
            "energy_j": energy_j,
        }

    def _energy_j(self) -> float | None:
        if self.energy_start_mj is None or self.energy_end_mj is None:
            return None
        return (self.energy_end_mj - self.energy_start_mj) / 1000.0


def _unsupported(uuid: str) -> dict[str, Any]:
    """The summary of a GPU that NVML cannot tell apart: no figures rather than another GPU's."""
    return {
        "uuid": uuid,
        "name": None,
        "nvml": "unsupported",
        "mem_used_peak_mib": None,
        "power_mean_w": None,
        "power_source": None,
        "energy_j": None,
    }


def _bare_uuid(uuid: str) -> str:
    """A UUID without NVML's "GPU-" or "MIG-" prefix, lower case, as CUDA gives it."""
    text = uuid.strip().lower()
    for prefix in ("gpu-", "mig-"):
        text = text.removeprefix(prefix)
    return text


def _handles_by_uuid() -> dict[str, Any]:
    """Every device NVML can open, whole GPUs and MIG instances, keyed by bare UUID."""
    handles: dict[str, Any] = {}
    for index in range(nvml.value(nvml.pynvml.nvmlDeviceGetCount) or 0):
        handle = nvml.value(nvml.pynvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            continue
        devices = [handle, *_mig_handles(handle)]
        for device in devices:
            uuid = nvml.value(nvml.pynvml.nvmlDeviceGetUUID, device)
            if uuid is not None:
                handles[_bare_uuid(nvml.text(uuid))] = device
    return handles


def _mig_handles(handle: Any) -> list[Any]:
    """The MIG instances of a GPU in MIG mode; [] otherwise."""
    modes = nvml.value(nvml.pynvml.nvmlDeviceGetMigMode, handle)
    if not modes or modes[0] != nvml.pynvml.NVML_DEVICE_MIG_ENABLE:
        return []
    count = nvml.value(nvml.pynvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
    found = (nvml.value(nvml.pynvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, i) for i in range(count))
    return [mig for mig in found if mig is not None]


def _max_or_none(values: list[float]) -> float | None:
    return max(values) if values else None


def _mean_or_none(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
