"""One rank's device, as an object: what a rank and its step do differently on the CPU and on a GPU.

torchtitan's `device_type, device_module` in one object, picked once per rank from the cell
(rank_device) or from a torch.device (device_of): the process group's backend, synchronisation,
peak memory, what a memory cap means, the streams and events that overlap work on a GPU, how the
loader's batches reach the device, and how a span of device work is timed. On the CPU the streams
and events are torch.cpu's, which do nothing, so the code that uses them holds no branch.
"""

from __future__ import annotations

import contextlib
import queue
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from types import ModuleType

import torch
from torch import distributed

from bench.config import Cell
from bench.units import MIB

Stream = torch.cuda.Stream | torch.cpu.Stream
"""A device's stream; torch.cpu's does nothing."""
Event = torch.cuda.Event | torch.cpu.Event
"""A device's event; torch.cpu's does nothing."""


class Stopwatch:
    """Times spans of work on the host clock: on the CPU the work is done when its call returns."""

    def __init__(self) -> None:
        self.times_s: list[float] = []

    @contextlib.contextmanager
    def span(self) -> Iterator[None]:
        start_s = time.perf_counter()
        yield
        self.times_s.append(time.perf_counter() - start_s)

    def take_s(self) -> list[float]:
        """The spans' seconds since the last call, cleared."""
        times, self.times_s = self.times_s, []
        return times


class EventStopwatch(Stopwatch):
    """Times spans of GPU work by CUDA events, read when taken: call take_s with the device synchronised."""

    def __init__(self) -> None:
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    @contextlib.contextmanager
    def span(self) -> Iterator[None]:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self.events.append((start, end))

    def take_s(self) -> list[float]:
        times = [start.elapsed_time(end) / 1000 for start, end in self.events]
        self.events = []
        return times


class Device:
    """A rank's device: `torch` is the torch.device its tensors live on; the rest is what varies by kind."""

    module: ModuleType
    """torch.cpu or torch.cuda: streams, events, synchronize."""
    backend: str
    """The process group's backend."""
    pin_memory: bool
    """Whether the loader pins its batches in host memory (they are copied to the device)."""

    def __init__(self, device: torch.device) -> None:
        self.torch = device

    @property
    def type(self) -> str:
        """The device type GradScaler and autocast take."""
        return self.torch.type

    @property
    def ddp_device_ids(self) -> list[int] | None:
        """DistributedDataParallel's device_ids."""
        return None

    def init_process_group(self, timeout: timedelta) -> None:
        distributed.init_process_group(self.backend, timeout=timeout)

    def start_runtime(self) -> dict[str, float]:
        """Start what the libraries keep on the device; the figures of what that holds (none on the CPU)."""
        return {}

    def cap_memory(self, cap_bytes: int) -> None:
        """Emulate a smaller memory of cap_bytes."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for the work queued on the device."""
        self.module.synchronize(self.torch)

    def peak_memory_mib(self) -> dict[str, float]:
        """Peak allocated and reserved MiB of torch's allocator since the last reset (none on the CPU)."""
        return {}

    def reset_peak_memory(self) -> None:
        """Start the peaks of peak_memory_mib afresh."""

    def gpus(self) -> list[dict]:
        """What the driver says of this rank's GPU (uuid, name, memory_mib): none on the CPU."""
        return []

    def stopwatch(self) -> Stopwatch:
        """A stopwatch for spans of work on this device."""
        return Stopwatch()

    def new_stream(self) -> Stream:
        """A side stream, to queue work apart from the current stream."""
        return self.module.Stream()

    def use_stream(self, stream: Stream) -> AbstractContextManager:
        """Queue the work inside the block on stream."""
        return self.module.stream(stream)

    def current_stream(self) -> Stream:
        return self.module.current_stream(self.torch)

    def record_event(self) -> Event:
        """An event after the work queued so far on the current stream, for a side stream to wait on."""
        event = self.module.Event()
        event.record(self.current_stream())
        return event

    def prefetch(self, batches: Iterator, num_ahead: int) -> Iterator:
        """The loader's batches as the step takes them: as they come, where the loader made them."""
        return batches


class CpuDevice(Device):
    """The CPU: gloo, nothing to synchronise, a memory cap on the address space."""

    module = torch.cpu
    backend = "gloo"
    pin_memory = False

    def cap_memory(self, cap_bytes: int) -> None:
        """Let the rank map cap_bytes beyond what it holds once torch and the process group are up.

        So that a cap means the same whatever the size of the libraries.
        """
        limit = address_space_bytes() + cap_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class CudaDevice(Device):
    """One GPU of the rank's own: NCCL, torch's caching allocator, streams and events."""

    module = torch.cuda
    backend = "nccl"
    pin_memory = True

    def __init__(self, device: torch.device) -> None:
        super().__init__(device)
        self.overhead_bytes = 0
        """Device memory outside the caching allocator, measured by start_runtime."""

    @property
    def ddp_device_ids(self) -> list[int]:
        return [self.torch.index]

    def init_process_group(self, timeout: timedelta) -> None:
        torch.cuda.set_device(self.torch)
        distributed.init_process_group(self.backend, device_id=self.torch, timeout=timeout)

    def start_runtime(self) -> dict[str, float]:
        """Create the CUDA context, NCCL's buffers and the cuBLAS/cuDNN handles, and measure what they hold.

        They are created on first use, so one small collective, matmul and convolution run first.
        Memory other processes hold on the device counts too: it is not there for this rank either.
        """
        x = torch.ones(8, 8, device=self.torch)
        distributed.all_reduce(x)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            (x.to(dtype) @ x.to(dtype)).sum().item()
        ones = torch.ones(1, 3, 8, 8, device=self.torch)
        torch.nn.functional.conv2d(ones, torch.ones(4, 3, 3, 3, device=self.torch))
        torch.cuda.synchronize(self.torch)
        free_bytes, total_bytes = torch.cuda.mem_get_info(self.torch)
        self.overhead_bytes = total_bytes - free_bytes - torch.cuda.memory_reserved(self.torch)
        return {"cuda_overhead_mib": self.overhead_bytes / MIB}

    def cap_memory(self, cap_bytes: int) -> None:
        """Make the device hold cap_bytes in all, as a smaller card does.

        The caching allocator gets what is left after the memory outside it (start_runtime's).
        """
        total_bytes = torch.cuda.get_device_properties(self.torch).total_memory
        fraction = memory_fraction(cap_bytes, self.overhead_bytes, total_bytes)
        torch.cuda.set_per_process_memory_fraction(fraction, self.torch)

    def peak_memory_mib(self) -> dict[str, float]:
        return {
            "peak_allocated_mib": torch.cuda.max_memory_allocated(self.torch) / MIB,
            "peak_reserved_mib": torch.cuda.max_memory_reserved(self.torch) / MIB,
        }

    def reset_peak_memory(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.torch)

    def gpus(self) -> list[dict]:
        props = torch.cuda.get_device_properties(self.torch)
        return [{"uuid": str(props.uuid), "name": props.name, "memory_mib": props.total_memory // MIB}]

    def stopwatch(self) -> EventStopwatch:
        return EventStopwatch()

    def new_stream(self) -> torch.cuda.Stream:
        return torch.cuda.Stream(self.torch)

    def prefetch(self, batches: Iterator, num_ahead: int) -> Prefetcher:
        """The batches copied to the GPU ahead of the step, as DataLoaderX does."""
        return Prefetcher(batches, self, num_ahead)


KINDS = {"cpu": CpuDevice, "cuda": CudaDevice}


def device_of(device: torch.device) -> Device:
    """The device object of a torch.device."""
    if device.type not in KINDS:
        raise ValueError(f"device must be one of {', '.join(KINDS)}, not {device.type!r}")
    return KINDS[device.type](device)


def rank_device(cell: Cell, local_rank: int) -> Device:
    """The device of a cell's rank: the GPU of its local rank, or the CPU."""
    return device_of(torch.device("cuda", local_rank) if cell.on_gpu else torch.device("cpu"))


def address_space_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def memory_fraction(cap_bytes: int, overhead_bytes: int, total_bytes: int) -> float:
    """The caching allocator's share of a device, so that it and the overhead together fill the cap."""
    if cap_bytes <= overhead_bytes:
        raise torch.cuda.OutOfMemoryError(
            f"CUDA out of memory: a cap of {cap_bytes / MIB:.0f} MiB leaves nothing beyond the "
            f"{overhead_bytes / MIB:.0f} MiB that the CUDA context, NCCL, cuBLAS and cuDNN hold"
        )
    return min(1.0, (cap_bytes - overhead_bytes) / total_bytes)


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetcher:
    """DataLoaderX on a GPU: a thread fills a queue of num_ahead; the next batch is copied on a side stream."""

    def __init__(self, batches: Iterator, device: CudaDevice, num_ahead: int) -> None:
        self.device = device
        self.queue: queue.Queue = queue.Queue(num_ahead)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._fill, args=(batches,), daemon=True)
        self.thread.start()
        self.stream = device.new_stream()
        self.ready = self._preload()

    def _fill(self, batches: Iterator) -> None:
        torch.cuda.set_device(self.device.torch)
        try:
            for batch in batches:
                while not self.stop.is_set():
                    try:
                        self.queue.put(batch, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 -- handed to the step's thread, raised there
            self.queue.put(_Failed(exc))

    def _preload(self) -> tuple[torch.Tensor, ...]:
        item = self.queue.get()
        if isinstance(item, _Failed):
            raise item.exc
        with self.device.use_stream(self.stream):
            return tuple(t.to(self.device.torch, non_blocking=True) for t in item)

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        current = self.device.current_stream()
        current.wait_stream(self.stream)
        batch = self.ready
        for tensor in batch:
            tensor.record_stream(current)
        self.ready = self._preload()
        return batch

    def close(self) -> None:
        self.stop.set()
        while not self.queue.empty():
            self.queue.get_nowait()
        self.thread.join(timeout=5)
