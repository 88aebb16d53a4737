"""`pfcbench dataset make` and `pfcbench data`: make a record dataset, measure its loader alone."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from bench.config import one_line
from bench.rank.host import usable_cpus
from bench.units import KIB, MIB
from bench.workload.recordio import RecFileError

WORKERS_PER_CPU = 4
"""Most DataLoader workers `pfcbench data` starts per CPU this run may use."""
MAX_WORKER_COUNTS = 16
"""Most worker counts one `pfcbench data` measures."""
MAX_BATCH_SIZE = 8192
"""Largest per-rank batch `pfcbench data` reads (about 1.2 GiB of float images)."""
MAX_STEPS = 100_000
"""Most timed batches per run of `pfcbench data`."""
MAX_RANKS = 1024
"""Most ranks whose shards `pfcbench data` reads, as a cell's nproc_per_node."""


class DataUsageError(click.ClickException):
    """Bad data or options: one line, exit code 2, before anything is written or run."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def worker_counts(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2); a UsageError names the bad entry."""
    parts = text.split(",", MAX_WORKER_COUNTS)
    if len(parts) > MAX_WORKER_COUNTS:
        raise DataUsageError(f"--workers: at most {MAX_WORKER_COUNTS} worker counts")
    try:
        counts = tuple(int(part) for part in parts)
    except ValueError:
        raise DataUsageError(f"--workers {text!r}: want a comma-separated list of integers, e.g. 0,1,2") from None
    cpus = usable_cpus()
    most = WORKERS_PER_CPU * cpus  # the most workers one loader may start
    if any(not 0 <= n <= most for n in counts):
        raise DataUsageError(
            f"--workers {text!r}: worker counts must be from 0 to {most} "
            f"({WORKERS_PER_CPU} per CPU, {cpus} CPU{'s' * (cpus != 1)} here)"
        )
    return counts


def check_bound(option: str, value: int, least: int, most: int) -> None:
    """DataUsageError unless least <= value <= most, naming the option and the bounds."""
    if not least <= value <= most:
        raise DataUsageError(f"{option} {value}: must be from {least:,} to {most:,}")


@contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end the block as Ctrl-C does, so that its cleanup runs (a plain kill would skip it)."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@click.group()
def dataset() -> None:
    """Make record datasets (train.rec + train.idx in insightface's layout).

    \b
    Example:
        pfcbench dataset make data/faces --images 5000 --classes 100
    """


@dataset.command("make")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--images", "num_images", type=int, required=True, help="Number of images N (1 to 10,000,000).")
@click.option("--classes", "num_classes", type=int, required=True, help="Number of identities K (1 to N).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic images (0 or more).")
def make(folder: Path, num_images: int, num_classes: int, seed: int) -> None:
    """Write FOLDER/train.rec + train.idx: N synthetic 112x112 face-sized JPEGs over K classes.

    FOLDER must be new or empty. A make that fails or is stopped (Ctrl-C, SIGTERM) leaves nothing.

    \b
    Example:
        pfcbench dataset make data/faces --images 5000 --classes 100
    """
    from bench.recfiles.make import make_dataset

    try:
        with stopped_by_signals():
            made = make_dataset(folder, num_images, num_classes, seed)
    except RecFileError as exc:
        raise DataUsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            one_line(f"{folder}: writing failed ({exc.strerror or exc}); nothing was kept")
        ) from None
    click.echo(
        f"{made.root}: {made.num_images} images, {made.num_classes} classes, "
        f"mean {made.mean_image_bytes / KIB:.2f} KiB per JPEG, train.rec {made.rec_bytes / MIB:.1f} MiB"
    )


@dataclass(frozen=True)
class LoaderRate:
    """One rank's loader, measured alone."""

    num_workers: int
    rank: int
    num_ranks: int
    batch_size: int
    steps: int
    samples_per_s: float
    """Samples per second over the timed batches (the first one, with the workers' start-up, is not)."""
    startup_s: float
    """Seconds to the first batch."""


@click.command("data")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--workers", default="0,1,2", show_default=True, help="DataLoader worker counts to measure.")
@click.option("--batch-size", type=int, default=128, show_default=True, help="Per-rank batch (1 to 8192).")
@click.option("--steps", type=int, default=20, show_default=True, help="Timed batches per run (1 to 100,000).")
@click.option(
    "--nproc",
    "num_ranks",
    type=int,
    default=1,
    show_default=True,
    help="Ranks whose shards are read (1 to 1024).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rates as JSON.")
def data(path: Path, workers: str, batch_size: int, steps: int, num_ranks: int, as_json: bool) -> None:
    """Measure the record loader alone (no training): samples/sec per worker count per rank.

    Each rank's shard of the DistributedSampler is read by its own loader, one rank after the
    other, so each figure is one rank's loader with the machine to itself. With 0 workers the
    batch is collated in this process with torch's intra-op threads (OMP_NUM_THREADS), which on
    a busy machine can cost more than the decoding.

    \b
    Example:
        pfcbench data data/faces --workers 1,2,4 --batch-size 128 --nproc 2
    """
    from bench.recfiles.check import check_sample
    from bench.workload.faces import FaceRecFile

    counts = worker_counts(workers)
    check_bound("--batch-size", batch_size, 1, MAX_BATCH_SIZE)
    check_bound("--steps", steps, 1, MAX_STEPS)
    check_bound("--nproc", num_ranks, 1, MAX_RANKS)
    try:
        records = FaceRecFile(path)
        check_sample(records, records.num_classes)
    except RecFileError as exc:
        raise DataUsageError(str(exc)) from None
    if records.num_images < batch_size * num_ranks:
        raise DataUsageError(
            f"{path}: {records.num_images} images, fewer than one global batch ({batch_size} x {num_ranks} ranks)"
        )
    rates = [measure(path, n, rank, num_ranks, batch_size, steps) for n in counts for rank in range(num_ranks)]
    if as_json:
        click.echo(json.dumps([asdict(rate) for rate in rates], indent=2))
        return
    from tabulate import tabulate

    rows = [[r.num_workers, r.rank, f"{r.samples_per_s:,.0f}", f"{r.startup_s:.2f}"] for r in rates]
    import torch

    click.echo(
        f"{path}: {records.num_images} images, batch {batch_size} per rank, {steps} timed batches, "
        f"{torch.get_num_threads()} torch threads in the reading process"
    )
    click.echo(tabulate(rows, headers=["workers", "rank", "samples/s", "first batch s"], tablefmt="github"))


def measure(path: Path, num_workers: int, rank: int, num_ranks: int, batch_size: int, steps: int) -> LoaderRate:
    """Time `steps` batches of one rank's loader on the CPU, after the first."""
    import torch

    from bench.workload.loader import LoaderOptions, rec_loader

    options = LoaderOptions(batch_size=batch_size, num_workers=num_workers, rank=rank, world_size=num_ranks)
    start = time.perf_counter()
    loader = rec_loader(path, options, torch.device("cpu"))
    try:
        next(loader)
        first = time.perf_counter()
        for _ in range(steps):
            next(loader)
        elapsed = time.perf_counter() - first
    except RecFileError as exc:
        raise DataUsageError(worker_message(exc)) from None
    finally:
        loader.close()
    return LoaderRate(num_workers, rank, num_ranks, batch_size, steps, steps * batch_size / elapsed, first - start)


def worker_message(exc: BaseException) -> str:
    """The one line a DataLoader worker raised, without the traceback DataLoader wraps around it."""
    text = str(exc).strip()
    name = type(exc).__name__ + ": "
    return text.rsplit(name, 1)[-1].strip().splitlines()[-1] if name in text else text.splitlines()[-1]
