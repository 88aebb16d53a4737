"""`pfcbench advise`: what fits, and how long a training job takes, on GPUs one does not own yet."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import click

from bench.commands.options import InputError, link_kind
from bench.config import BACKBONES as CELL_BACKBONES
from bench.config import IMPLS

if TYPE_CHECKING:
    from bench.advise.search import Job, Knobs
    from bench.gpus import GpuSpec

BACKBONES = tuple(name for name in CELL_BACKBONES if name != "none")
"""The backbones a job trains: the cell's, less "none" (the classifier alone)."""


def whole_numbers(option: str, text: str) -> list[int]:
    """A comma-separated list of positive whole numbers; InputError naming the option otherwise."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or any(value < 1 for value in values):
        raise InputError(f"{option} {text!r}: give positive whole numbers separated by commas (1,2,4,8)")
    return list(dict.fromkeys(values))


def sample_rates(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(0 < value <= 1 for value in values):
        raise InputError(f"--sample-rates {text!r}: give numbers in (0, 1] separated by commas (1.0,0.5,0.2,0.1)")
    return list(dict.fromkeys(values))


def catalogue_gpus(text: str) -> list[GpuSpec]:
    from bench.gpus import gpu_named

    try:
        return list({spec.name: spec for spec in (gpu_named(name) for name in text.split(","))}.values())
    except ValueError as exc:
        raise InputError(f"--gpu: {exc}") from None


def gpu_counts(text: str) -> list[int]:
    from bench.time_model import GPUS_PER_SERVER, MAX_NODES

    counts = whole_numbers("--gpus", text)
    for count in counts:
        if count > GPUS_PER_SERVER and count % GPUS_PER_SERVER:
            raise InputError(f"--gpus {count}: past {GPUS_PER_SERVER} GPUs a job takes whole nodes of 8 (16, 24, ...)")
        if count > GPUS_PER_SERVER * MAX_NODES:
            raise InputError(f"--gpus {count}: the time model takes at most {MAX_NODES} nodes of 8 GPUs")
    return sorted(counts)


def job_of(backbone, train_on, classes, images, epochs, impl) -> Job:
    """The job the options describe: a dataset by name, or classes, images and epochs."""
    from bench.advise.search import Job
    from bench.report.training_runs import TrainingRun, find_dataset

    try:
        if train_on is not None:
            if classes is not None or images is not None:
                raise ValueError("--train-on names the dataset: give it, or --classes and --images, not both")
            dataset = find_dataset(train_on)
            run = TrainingRun.of(dataset, epochs)
            return Job(backbone=backbone, classes=dataset.num_classes, run=run, dataset=dataset.name, impl=impl)
        if classes is None or images is None or epochs is None:
            raise ValueError("give --train-on DATASET, or --classes N --images N --epochs E")
        if classes < 1:
            raise ValueError(f"--classes must be a whole number of at least 1, not {classes}")
        return Job(backbone=backbone, classes=classes, run=TrainingRun(images=images, epochs=epochs), impl=impl)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def knobs_of(gpus: list[GpuSpec], batches: str | None, rates: str | None, precisions: str | None) -> Knobs:
    from bench.advise.search import BATCHES, PRECISIONS, SAMPLE_RATES, Knobs

    chosen = PRECISIONS if precisions is None else tuple(p.strip().lower() for p in precisions.split(","))
    unknown = [p for p in chosen if p not in PRECISIONS]
    if unknown:
        raise InputError(f"--precisions: unknown precision {unknown[0]!r} (precisions: {', '.join(PRECISIONS)})")
    knobs = Knobs(
        batches=BATCHES if batches is None else tuple(whole_numbers("--batch-sizes", batches)),
        sample_rates=SAMPLE_RATES if rates is None else tuple(sample_rates(rates)),
        precisions=chosen,
    )
    for gpu in gpus:
        if not knobs.precisions_on(gpu):
            raise InputError(f"nothing to choose from on {gpu.name}: it has none of {', '.join(chosen)}")
    return knobs


@click.command()
@click.option("--train-on", default=None, metavar="DATASET", help="The dataset: webface42m, glint360k, ms1mv3, ...")
@click.option("--classes", type=int, default=None, help="Identities, for a dataset not named (with --images).")
@click.option("--images", type=int, default=None, help="Images an epoch, for a dataset not named.")
@click.option("--epochs", type=int, default=None, help="Epochs of the run  [default: the dataset's config's]")
@click.option("--backbone", type=click.Choice(BACKBONES), default="r50", show_default=True)
@click.option("--gpu", "gpu_names", required=True, metavar="NAME[,NAME]", help="GPUs of the catalogue (pfcbench gpus).")
@click.option("--gpus", "counts", default="1,2,4,8", show_default=True, help="GPU counts; past 8, nodes of 8.")
@click.option(
    "--link",
    default=None,
    callback=link_kind,
    metavar="KIND",
    help="The link between the GPUs of a node (as plan --link takes it)  [default: the server the GPU's report "
    "was published on, else the GPU's usual 8-GPU server's]",
)
@click.option("--gpu-hour-price", type=float, default=None, help="Price of one GPU-hour: adds the cost of the run.")
@click.option(
    "--impl",
    type=click.Choice(IMPLS),
    default="arcface_torch",
    show_default=True,
    help="Program of the step (arcface_torch_2021 to compare with the RTX 3080, RTX 3090 and V100 reports).",
)
@click.option("--batch-sizes", default=None, help="Batches a GPU to search  [default: 32,64,128,256,512]")
@click.option("--sample-rates", "rates", default=None, help="Partial FC sample rates  [default: 1.0,0.5,0.2,0.1]")
@click.option("--precisions", default=None, help="Precisions  [default: fp16,bf16,fp32; bf16 where the GPU has it]")
@click.option("--json", "as_json", is_flag=True, help="Print every configuration searched as one JSON document.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print the advice and every configuration as markdown.")
def advise(
    train_on, classes, images, epochs, backbone, gpu_names, counts, link, gpu_hour_price, impl, batch_sizes, rates,
    precisions, as_json, as_markdown,
) -> None:  # fmt: skip
    """Which configuration of a training job fits each GPU and count, and trains fastest.

    For each GPU and count, every configuration of the knobs arcface_torch has (batch a GPU, Partial
    FC sample rate, fp16 / bf16 / fp32 with TF32 where the GPU has it) is predicted: its memory by
    the memory model against the card, its samples/sec by the time model in the server the GPU's report
    was published on, else its usual 8-GPU server (nodes of 8 past 8 GPUs). Printed per GPU and count: the fastest that fits, its memory and
    headroom, the hours of the run (and its cost with --gpu-hour-price); where nothing fits, what would.
    Then how the memory a GPU splits as the count grows, and how sure the speeds are.

    \b
    Example:
        pfcbench advise --train-on webface42m --backbone r50 --gpu rtx3090,a100-sxm4-80gb --gpus 1,2,4,8,16
        pfcbench advise --train-on webface42m --gpu rtx3080 --gpus 8 --impl arcface_torch_2021 --json
        pfcbench advise --classes 1000000 --images 45000000 --epochs 20 --gpu a10 --gpu-hour-price 1.1
    """
    from bench.advise.search import advise as search
    from bench.memory import TraceProgress
    from bench.time_model import CannotPredict

    job = job_of(backbone, train_on, classes, images, epochs, impl)
    gpus = catalogue_gpus(gpu_names)
    numbers = gpu_counts(counts)
    knobs = knobs_of(gpus, batch_sizes, rates, precisions)
    if gpu_hour_price is not None and not (math.isfinite(gpu_hour_price) and gpu_hour_price > 0):
        raise InputError(f"--gpu-hour-price must be a finite positive number, not {gpu_hour_price}")
    if numbers[-1] > job.classes:
        raise InputError(f"--gpus {numbers[-1]}: more GPUs than the job's {job.classes} classes")
    try:
        advice = search(job, gpus, numbers, knobs, link, TraceProgress.on_terminal())
    except (CannotPredict, RuntimeError) as exc:
        raise InputError(str(exc)) from None
    from bench.advise.output import advice_json, advice_lines, markdown_lines

    if as_json:
        click.echo(json.dumps(advice_json(advice, gpu_hour_price), indent=2))
    elif as_markdown:
        click.echo("\n".join(markdown_lines(advice, gpu_hour_price)))
    else:
        click.echo("\n".join(advice_lines(advice, gpu_hour_price)))
