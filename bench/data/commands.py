"""`pfcbench dataset make` and `pfcbench data`: make a record dataset, measure its loader alone."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from bench.data.recordio import RecordError
from bench.units import KIB, MIB


class DataUsageError(click.ClickException):
    """Bad data or options: one line, exit code 2, before anything is written or run."""

    exit_code = 2


def worker_counts(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2); a UsageError names the bad entry."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise DataUsageError(f"--workers {text!r}: want a comma-separated list of integers, e.g. 0,1,2") from None
    if any(n < 0 for n in counts):
        raise DataUsageError(f"--workers {text!r}: worker counts must be 0 or more")
    return counts


@click.group()
def dataset() -> None:
    """Make record datasets (train.rec + train.idx in insightface's layout).

    \b
    Example:
        pfcbench dataset make data/faces --images 5000 --classes 100
    """


@dataset.command("make")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", "num_images", type=click.IntRange(min=1), required=True, help="Number of images N.")
@click.option("--classes", "num_classes", type=click.IntRange(min=1), required=True, help="Number of identities K.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic images.")
def make(folder: Path, num_images: int, num_classes: int, seed: int) -> None:
    """Write FOLDER/train.rec + train.idx: N synthetic 112x112 face-sized JPEGs over K classes.

    \b
    Example:
        pfcbench dataset make data/faces --images 5000 --classes 100
    """
    from bench.data.make import make_dataset

    try:
        made = make_dataset(folder, num_images, num_classes, seed)
    except RecordError as exc:
        raise DataUsageError(str(exc)) from None
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
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Per-rank batch.")
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True, help="Timed batches per run.")
@click.option(
    "--nproc",
    "num_ranks",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Ranks whose shards are read.",
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
    from bench.data.faces import FaceRecords

    counts = worker_counts(workers)
    try:
        records = FaceRecords(path)
    except RecordError as exc:
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

    from bench.workload.data import LoaderOptions, record_loader

    options = LoaderOptions(batch_size=batch_size, num_workers=num_workers, rank=rank, world_size=num_ranks)
    start = time.perf_counter()
    loader = record_loader(path, options, torch.device("cpu"))
    try:
        next(loader)
        first = time.perf_counter()
        for _ in range(steps):
            next(loader)
        elapsed = time.perf_counter() - first
    except RecordError as exc:
        raise DataUsageError(worker_message(exc)) from None
    finally:
        loader.close()
    return LoaderRate(num_workers, rank, num_ranks, batch_size, steps, steps * batch_size / elapsed, first - start)


def worker_message(exc: BaseException) -> str:
    """The one line a DataLoader worker raised, without the traceback DataLoader wraps around it."""
    text = str(exc).strip()
    name = type(exc).__name__ + ": "
    return text.rsplit(name, 1)[-1].strip().splitlines()[-1] if name in text else text.splitlines()[-1]
