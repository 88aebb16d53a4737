"""One rank of a benchmark cell: `torchrun ... -m bench.rank.worker --cell cell.json --out DIR`.

Each rank writes DIR/rank-N.json: status ok, oom or error, where it happened and its figures.
A failing rank writes its file and leaves with a non-zero code at once, so that torchrun tears
the other ranks down instead of leaving them blocked in a collective.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import socket
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import torch
from torch import distributed

from bench.config import Cell
from bench.rank import fanout
from bench.rank.host import describe_machine
from bench.rank.lifetime import die_with_parent
from bench.rank.measure import prepare_flop_counting, time_windows
from bench.rank.memcap import failure_status
from bench.rank.output import write_atomic
from bench.rank.telemetry import GpuSampler, cpu_peak_rss_mib
from bench.units import GIB, KIB, MIB
from bench.workload.base_step import BaseStep, build_step
from bench.workload.device import Device, rank_device

BYTES_ASKED = re.compile(r"(?i)tried to allocate ([\d.]+) ?(bytes|KiB|MiB|GiB)")
UNITS = {"bytes": 1, "kib": KIB, "mib": MIB, "gib": GIB}
BEAT_INTERVAL_S = 1.0


class Heartbeat:
    """Touches OUT/heartbeat to show the launcher's watchdog that the rank is alive.

    A timed step beats at most once per interval_s: on a cluster's shared filesystem a touch is a
    network round trip, which must not land in every measured step.
    """

    def __init__(self, path: Path, interval_s: float = BEAT_INTERVAL_S) -> None:
        self.path = path
        self.interval_s = interval_s
        self.last_beat = -math.inf

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last_beat >= self.interval_s:
            self.path.touch()
            self.last_beat = now

    def now(self) -> None:
        """Beat whatever the interval: after a set-up stage, which takes far longer than a second."""
        self.path.touch()
        self.last_beat = time.monotonic()


def bytes_asked(exc: BaseException) -> int | None:
    match = BYTES_ASKED.search(str(exc))
    return int(float(match.group(1)) * UNITS[match.group(2).lower()]) if match else None


def peak_memory(device: Device) -> dict:
    """The allocator's peaks (None where the device has no such figures) and the process's peak RSS."""
    peaks = {"peak_allocated_mib": None, "peak_reserved_mib": None, **device.peak_memory_mib()}
    return {**peaks, "peak_rss_mib": cpu_peak_rss_mib()}


def set_up(cell: Cell, out: Path, figures: dict, pg_timeout: timedelta) -> tuple[BaseStep, Heartbeat]:
    """Join the process group, apply the memory cap and build the step; returns it and a heartbeat.

    figures gets what the device's runtime holds (on CUDA, cuda_overhead_mib: the memory outside the
    caching allocator).
    """
    beat = Heartbeat(out / "heartbeat")
    beat.now()
    device = rank_device(cell, int(os.environ["LOCAL_RANK"]))
    device.init_process_group(pg_timeout)
    beat.now()
    prepare_flop_counting()
    beat.now()
    figures.update(device.start_runtime())
    if cell.max_memory_gib is not None:
        device.cap_memory(int(cell.max_memory_gib * GIB))
    step = build_step(cell, device.torch, distributed.get_rank())
    beat.now()
    return step, beat


def measure(cell: Cell, step: BaseStep, beat: Callable[[], None]) -> dict:
    """Time the step and return this rank's figures: times, losses, memory, its GPU's telemetry.

    Peak memory is reset after warm-up: cuDNN's autotuning tries workspaces sized from the free
    memory of the card, which no measured step needs. The warm-up's own peak is kept apart.
    """
    device = step.rank_device
    devices = device.gpus()
    sampler = GpuSampler([d["uuid"] for d in devices])
    warmup: dict = {}

    def after_warmup() -> None:
        warmup.update({f"warmup_{name}": value for name, value in device.peak_memory_mib().items()})
        device.reset_peak_memory()
        warmup["warmup_skipped_steps"] = step.num_skipped_steps
        step.take_forward_times_s()

    figures = time_windows(
        step,
        device=device,
        warmup_steps=cell.warmup_steps,
        num_windows=cell.num_windows,
        steps_per_window=cell.steps_per_window,
        heartbeat=beat,
        measured=sampler,
        after_warmup=after_warmup,
        batch_wait_s=step.batch.take_wait_s,
    )
    step.batch.close()
    own = own_figures(figures, step.take_forward_times_s(), cell.num_windows * cell.steps_per_window)
    gpus = [{**d, **{k: v for k, v in nvml.items() if v is not None}} for d, nvml in zip(devices, sampler.summary())]
    scaler = {}
    if step.scaler.is_enabled():
        scaler = {
            "grad_scale": step.scaler.get_scale(),
            "skipped_steps": step.num_skipped_steps - warmup["warmup_skipped_steps"],
        }
    gpus = gpus or [dict(d, nvml="unavailable") for d in devices]
    return {**figures, **own, **peak_memory(device), **warmup, **scaler, "gpus": gpus}


def own_figures(figures: dict, forward_times_s: list[float], measured_steps: int) -> dict:
    """What sets this rank apart from the others: its median step and forward times, its non-finite losses."""
    timed_losses = figures["losses"][-measured_steps:]
    return {
        "step_time_s_median": statistics.median(figures["step_times_s"]),
        "forward_time_s_median": statistics.median(forward_times_s) if forward_times_s else None,
        "nonfinite_losses": sum(not math.isfinite(loss) for loss in timed_losses),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="One rank of a pfcbench cell (started by torchrun).")
    parser.add_argument("--cell", type=Path, required=True, help="cell config JSON")
    parser.add_argument("--out", type=Path, required=True, help="folder for rank-N.json and ranks.json")
    parser.add_argument(
        "--pg-timeout-s",
        type=float,
        default=1800.0,
        help="the process group's timeout (the launcher's, from its limits)",
    )
    args = parser.parse_args(argv)
    die_with_parent(signal.SIGKILL)  # a rank never outlives its torchrun agent
    rank = int(os.environ["RANK"])
    cell = Cell.from_dict(json.loads(args.cell.read_text()))
    record: dict = {
        "rank": rank,
        "local_rank": int(os.environ["LOCAL_RANK"]),
        "world_size": int(os.environ["WORLD_SIZE"]),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
        "started_at": time.time(),
    }
    step = None
    try:
        step, beat = set_up(cell, args.out, record, timedelta(seconds=args.pg_timeout_s))
        fanout.watch(record["world_size"], rank, lambda found: leave_after_peer(record, step, found, args.out))
        record.update(measure(cell, step, beat), status="ok")
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded, then the rank leaves
        record.update(
            status=failure_status(exc),
            phase=step.phase if step else "setup",
            exception=type(exc).__name__,
            error=str(exc)[-2000:],
            traceback=traceback.format_exc()[-4000:],
            oom_bytes=bytes_asked(exc),
        )
        fanout.announce(record)
        leave_failed(dict(record, peer_failures=fanout.failures(record["world_size"], rank)), args.out)
    with LEAVING:  # a peer's failure seen from now on is the collectives' to report
        write_atomic(args.out / f"rank-{rank}.json", json.dumps(record))
    share_with_every_node(record, args.out)
    describe_node(args.out)
    leave(0)


def leave(code: int) -> NoReturn:
    """Exit at once, without the interpreter's or the libraries' teardown.

    The rank's figures are on disk by now; destructors of communicators and threads at exit can
    abort the process ("terminate called without an active exception") and would turn a finished
    measurement into a failed one, so none of them runs.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


LEAVING = threading.Lock()
"""Held by the one thread that writes this rank's file: the main one, or the peer watcher."""


def leave_failed(record: dict, out: Path) -> NoReturn:
    """Write this rank's file and leave at once, so that torchrun tears the other ranks down."""
    LEAVING.acquire()  # the other thread, if it got here first, is leaving the process already
    write_atomic(out / f"rank-{record['rank']}.json", json.dumps(record))
    print(f"rank {record['rank']}: {record['status']} in {record['phase']}: {record['error'][-300:]}", file=sys.stderr)
    sys.stderr.flush()
    os._exit(1)


def leave_after_peer(record: dict, step: BaseStep, found: list[dict], out: Path) -> None:
    """Another rank failed (on this node or another): record its failure beside this rank's and leave."""
    first = found[0]
    error = f"rank {first['rank']} on {first['host']} failed first: {first['status']} in {first['phase']}"
    leave_failed(dict(record, status="error", phase=step.phase, error=error, peer_failures=found), out)


def describe_node(out: Path) -> None:
    """Local rank 0 writes OUT/machine-HOST.json: under Slurm the runner's own machine is not the one that ran."""
    if os.environ["LOCAL_RANK"] == "0":
        write_atomic(out / f"machine-{socket.gethostname()}.json", json.dumps(describe_machine()))


def share_with_every_node(record: dict, out: Path) -> None:
    """Gather every rank's figures; local rank 0 of each node writes them all to OUT/ranks.json.

    So the runner on any node, the one holding rank 0 included, sees the memory and NVML
    figures of all nodes without a shared filesystem. The closing barrier keeps every rank until
    every node's file is written.
    """
    everyone: list = [None] * record["world_size"]
    distributed.all_gather_object(everyone, record)
    if record["local_rank"] == 0:
        write_atomic(out / "ranks.json", json.dumps({"ranks": everyone}))
    distributed.barrier()


if __name__ == "__main__":
    main()
