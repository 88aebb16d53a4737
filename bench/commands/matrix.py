"""`pfcbench plan` and `pfcbench matrices`: what a matrix holds and what running it would do."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bench.commands.options import (
    InputError,
    gibibytes,
    gpu_named,
    link_kind,
    load_plan,
    memory_size,
    training_options,
    with_matrix,
)
from bench.matrix import packaged_matrices
from bench.plan.table import (
    add_predicted_training,
    add_speeds,
    add_training,
    plan_entries,
    plan_entries_plain,
    plan_rows,
)

if TYPE_CHECKING:
    from bench.gpus import GpuSpec
    from bench.matrix import Matrix
    from bench.plan.build import Plan
    from bench.report.training import TrainingColumns
    from bench.time_model import Target


@click.command()
@with_matrix
@click.option(
    "--memory-gib",
    type=float,
    default=None,
    callback=gibibytes,
    help="Predict each cell's peak memory per rank and whether it fits in this many GiB per rank.",
)
@click.option(
    "--gpu",
    default=None,
    callback=gpu_named,
    metavar="NAME",
    help="Predict each cell's samples/sec on this GPU (pfcbench gpus), and its memory as --memory-gib does "
    "against the GPU's memory as its driver reports it.",
)
@click.option(
    "--link",
    default=None,
    callback=link_kind,
    metavar="KIND",
    help="With --gpu: the link between the GPUs of a node: nvswitch, nvlink, nvlink-bridge (pairs), pcie3, pcie4, "
    "pcie5, or pcie3-nop2p ... (peer-to-peer off)  [default: the matrix's published server for its own card, "
    "else the GPU's usual 8-GPU server's]",
)
@click.option(
    "--predict",
    is_flag=True,
    help="Predict each cell's peak memory per rank, against the matrix's max_memory_gib or this machine's GPU.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the plan as a JSON array, one object per cell, with predictions."
)
@training_options
def plan(
    matrix: Matrix,
    results_root: Path,
    memory_gib: float | None,
    gpu: GpuSpec | None,
    link: str | None,
    predict: bool,
    as_json: bool,
    training: tuple[TrainingColumns, ...],
) -> None:
    """List the cells of a matrix in order, and which already have a final record.

    With --memory-gib, --gpu, --predict or --json, each cell also gets its predicted peak memory per rank
    (traced from its real training step on the CPU) and Fail where that exceeds the memory size.
    With --gpu, each cell on a GPU also gets its predicted samples/sec on that GPU (bench.time_model), in
    the matrix's published server where the GPU is its card, else in the GPU's usual 8-GPU server (--link
    names another link; --nnodes N spreads each cell over N such servers, one 100 Gb/s link each).
    With --train-on (or --images and --epochs), each cell that has run ok also gets its samples/sec
    and the hours one training run would take at it (--gpu-hour-price: and its cost); with --gpu, at
    the predicted samples/sec.
    MATRIX is a matrix file or the name of a packaged one (pfcbench matrices); smoke by default.
    A file of that name in the working directory wins over the packaged matrix; a folder does not.

    \b
    Example:
        pfcbench plan rtx3080
        pfcbench plan my-matrix.toml --nproc 1
        pfcbench plan rtx3080 --memory-gib 10
        pfcbench plan v100 --gpu v100-sxm2-32gb --json
        pfcbench plan a100 --gpu h100-sxm --train-on webface42m
        pfcbench plan rtx3090 --gpu rtx4090 --link pcie4-nop2p --nnodes 2
    """
    from tabulate import tabulate

    memory_gib = memory_size(memory_gib, gpu)
    the_plan = load_plan(matrix, results_root)
    target, steps = speed_prediction(the_plan, gpu, link)
    predicted = predict or as_json or memory_gib is not None
    try:
        entries = (
            plan_entries(the_plan, memory_gib, gpu.name if gpu else None) if predicted else plan_entries_plain(the_plan)
        )
    except RuntimeError as exc:
        raise InputError(str(exc)) from None
    if target is not None:
        add_speeds(entries, the_plan.cells, steps, target)
    rows = plan_rows(the_plan, entries)
    if target is not None:
        add_predicted_training(entries, rows, the_plan.cells, training)
    else:
        add_training(entries, rows, the_plan, training)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    click.echo(tabulate(rows, headers="keys", tablefmt="github"))
    for line in plan_lines(the_plan, entries, gpu, predicted):
        click.echo(line)
    if target is not None:
        for line in speed_lines(entries, target):
            click.echo(line)


def speed_prediction(the_plan: Plan, gpu: GpuSpec | None, link: str | None) -> tuple[Target | None, list]:
    """Where --gpu predicts the plan's cells, and each cell's predicted step; (None, []) without --gpu.
    Checked before any cell is traced: a link or a cell the time model cannot take is one line, exit 2."""
    from bench.plan.table import predict_speeds
    from bench.time_model import CannotPredict, target_for

    if gpu is None:
        if link is not None:
            raise click.UsageError("--link needs --gpu NAME: the GPU whose servers it links")
        return None, []
    try:
        target = target_for(gpu, the_plan.matrix.report, link)
        return target, predict_speeds(the_plan.cells, target)
    except CannotPredict as exc:
        raise InputError(str(exc)) from None


def plan_lines(the_plan: Plan, entries: list[dict], gpu: GpuSpec | None, predicted: bool) -> list[str]:
    """The lines under the plan's table: what is left to run, rows not run, and the memory prediction."""
    searches = the_plan.matrix.searches()
    and_searches = f" and {len(the_plan.pending_searches())} of {len(searches)} searches" if searches else ""
    lines = [
        f"{len(the_plan.pending())} of {len(the_plan.cells)} cells to run{and_searches}; results in {the_plan.results_file}"
    ]
    for section, row in the_plan.matrix.not_run_rows():
        lines.append(
            f"not run: {section.title or 'table'}, {', '.join(row.labels.values()) or row.cell.cell_id}: {row.not_run}"
        )
    if predicted:
        fails = sum(entry["predicted_fits"] is False for entry in entries)
        fits = sum(entry["predicted_fits"] is True for entry in entries)
        unsized = len(entries) - fails - fits
        on_gpu = f" on {gpu.name} ({gpu.model}, {gpu.memory_mib} MiB as its driver reports it)" if gpu else ""
        no_size = f", {unsized} with no memory size to hold them to (--memory-gib N)" if unsized else ""
        lines.append(f"predicted{on_gpu}: {fails} Fail, {fits} fit{no_size}; peak of rank 0, GPU-only parts modelled")
    return lines


def speed_lines(entries: list[dict], target: Target) -> list[str]:
    """What the predicted samples/sec are for, and how sure they are."""
    from bench.sureness import sureness
    from bench.time_model import FITTED_SOFTWARE

    predicted = [entry for entry in entries if entry.get("predicted_samples_per_s") is not None]
    impls = sorted({entry["predicted_for"]["impl"] for entry in predicted})
    nodes = sorted({entry["config"]["nnodes"] for entry in predicted})
    between = f"; between nodes one {8 * target.server.network_gb_s:g} Gb/s link per node" if nodes[-1] > 1 else ""
    # the GPU and link by name, the sizes by the field outside its published range
    outside = Counter(
        what if what.startswith(("GPU", "link")) else what.rsplit(" ", 1)[0]
        for entry in predicted
        for what in entry["extrapolated"]
    )
    lines = [
        f"samples/sec predicted in {target.server.name} ({target.server.text}; link {target.link}: "
        f"{target.link_text}{between}) for {', '.join(impls)} on {FITTED_SOFTWARE}; "
        f"{sureness(target.gpu).text(target.gpu.name)}"
    ]
    if outside:
        said = ", ".join(f"{what} ({count} of {len(predicted)} cells)" for what, count in outside.items())
        lines.append(f"extrapolated beyond the six reports: {said}")
    return lines


@click.command()
def matrices() -> None:
    """List the matrices that ship with pfcbench, each with what it measures.

    Give a name to plan, run or report --matrix in place of a file.

    \b
    Example:
        pfcbench matrices
    """
    from bench.matrix import MatrixError, load_matrix

    for name, path in packaged_matrices().items():
        try:
            description = load_matrix(path).description
        except MatrixError as exc:
            description = f"(cannot be read: {exc})"
        click.echo(f"{name:<12} {description}")
