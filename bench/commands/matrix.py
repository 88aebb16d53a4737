"""`pfcbench plan` and `pfcbench matrices`: what a matrix holds and what running it would do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bench.commands.options import gibibytes, gpu_named, load_plan, memory_size, training_options, with_matrix
from bench.matrix import packaged_matrices
from bench.plan.table import add_training, plan_entries, plan_entries_plain, plan_rows

if TYPE_CHECKING:
    from bench.gpus import GpuSpec
    from bench.matrix import Matrix
    from bench.report.training import TrainingColumns


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
    help="Predict as --memory-gib does, against the memory of this GPU as its driver reports it (pfcbench gpus).",
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
    predict: bool,
    as_json: bool,
    training: tuple[TrainingColumns, ...],
) -> None:
    """List the cells of a matrix in order, and which already have a final record.

    With --memory-gib, --gpu, --predict or --json, each cell also gets its predicted peak memory per rank
    (traced from its real training step on the CPU) and Fail where that exceeds the memory size.
    With --train-on (or --images and --epochs), each cell that has run ok also gets its samples/sec
    and the hours one training run would take at it (--gpu-hour-price: and its cost).
    MATRIX is a matrix file or the name of a packaged one (pfcbench matrices); smoke by default.
    A file of that name in the working directory wins over the packaged matrix; a folder does not.

    \b
    Example:
        pfcbench plan rtx3080
        pfcbench plan my-matrix.toml --nproc 1
        pfcbench plan rtx3080 --memory-gib 10
        pfcbench plan rtx3080 --gpu rtx3080
        pfcbench plan rtx3080 --memory-gib 10 --json
        pfcbench plan a100 --memory-gib 80 --train-on webface42m --epochs 20
    """
    from tabulate import tabulate

    memory_gib = memory_size(memory_gib, gpu)
    gpu_name = gpu.name if gpu else None
    the_plan = load_plan(matrix, results_root)
    predicted = predict or as_json or memory_gib is not None
    try:
        entries = plan_entries(the_plan, memory_gib, gpu_name) if predicted else plan_entries_plain(the_plan)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    rows = plan_rows(the_plan, entries)
    add_training(entries, rows, the_plan, training)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    click.echo(tabulate(rows, headers="keys", tablefmt="github"))
    searches = the_plan.matrix.searches()
    and_searches = f" and {len(the_plan.pending_searches())} of {len(searches)} searches" if searches else ""
    click.echo(
        f"{len(the_plan.pending())} of {len(the_plan.cells)} cells to run{and_searches}; results in {the_plan.results_file}"
    )
    for section, row in the_plan.matrix.not_run_rows():
        click.echo(
            f"not run: {section.title or 'table'}, {', '.join(row.labels.values()) or row.cell.cell_id}: {row.not_run}"
        )
    if predicted:
        fails = sum(entry["predicted_fits"] is False for entry in entries)
        on_gpu = f" on {gpu.name} ({gpu.model}, {gpu.memory_mib} MiB as its driver reports it)" if gpu else ""
        click.echo(
            f"predicted{on_gpu}: {fails} Fail, {sum(e['predicted_fits'] is True for e in entries)} fit (peak of rank 0, GPU-only parts modelled)"
        )


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
