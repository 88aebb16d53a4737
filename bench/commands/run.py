"""pfcbench run: every pending cell of a matrix, one record each in its results folder."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bench.commands.lines import cell_line, line_fields, outcome, record_line
from bench.commands.options import (
    RERUN,
    InputError,
    MatrixUsageError,
    load_plan,
    make_launch,
    rdzv_option,
    timeout_options,
    with_launcher,
    with_matrix,
)
from bench.commands.sweep import ledger_of
from bench.plan.search import PROBES_PER_SEARCH
from bench.plan.table import NoMemorySize, cpu_sections_hint, predicted_failures
from bench.store.files import FileError

if TYPE_CHECKING:
    from bench.launch.slurm import SlurmOptions
    from bench.matrix import Matrix


@click.command()
@with_matrix
@with_launcher
@timeout_options
@click.option(
    "--rerun",
    type=click.Choice(RERUN),
    default=None,
    help="Run again cells that have a record: failed (error, timeout, a NaN loss) or all.",
)
@click.option(
    "--prune-after-oom/--no-prune-after-oom",
    default=None,
    help="Record larger batches of a config that ran out of memory as skipped.",
)
@rdzv_option("HOST:PORT of the c10d rendezvous for cells of several nodes.")
@click.option(
    "--skip-predicted-fail",
    is_flag=True,
    help="Record cells whose predicted peak memory exceeds the memory per rank (max_memory_gib or the GPU's) as skipped.",
)
def run(
    matrix: Matrix,
    results_root: Path,
    slurm: SlurmOptions | None,
    max_jobs: int,
    detach: bool,
    timeout_s,
    inactivity_timeout_s,
    rerun,
    prune_after_oom,
    rdzv_endpoint,
    skip_predicted_fail,
) -> None:
    """Run every pending cell of a matrix, recording each in results/<matrix>/results.jsonl.

    MATRIX is a matrix file or the name of a packaged one (pfcbench matrices); by default the smoke
    matrix (CPU, 2 ranks); a file of that name in the working directory wins over the packaged
    matrix, a folder does not. Cells that already have a final record are skipped; Ctrl-C loses at
    most the cell in flight.

    \b
    Example:
        pfcbench run smoke
        pfcbench run smoke --set precision=bf16 --results results-bf16
        pfcbench run rtx3080 --launcher slurm --partition gpu --account myproj --slurm-time 30
        pfcbench run rtx3080 --skip-predicted-fail --max-memory-gib 10
        pfcbench run my-matrix.toml
    """
    from bench.launch.local import LocalLauncher, gpu_shortage, visible_gpus
    from bench.launch.runner import Tally, run_cells
    from bench.recfiles.check import data_problem

    the_plan = load_plan(matrix, results_root, rerun)
    in_flight = ledger_of(the_plan.results_dir)  # checked before anything is run, written or deleted
    if in_flight and slurm is None:
        raise InputError(
            f"{the_plan.results_dir}: {len(in_flight)} Slurm jobs of this matrix are in flight; follow them with "
            f"pfcbench status / pfcbench collect {the_plan.results_dir}, or run with --launcher slurm to adopt them"
        )
    pending = the_plan.pending()
    searches = the_plan.pending_searches()
    if not pending and not searches:
        click.echo(
            f"Nothing to run: all {len(the_plan.cells)} cells of {matrix.name} have a final record in {the_plan.results_file} (--rerun failed|all runs them again)."
        )
        return
    if slurm is not None and rdzv_endpoint is not None:
        raise click.UsageError("--rdzv-endpoint is for --launcher local: a Slurm job meets on its own first node")
    if slurm is None and rdzv_endpoint is None and any(cell.launched_nodes > 1 for cell in pending):
        raise MatrixUsageError(f"{matrix.path}: cells of several nodes need --rdzv-endpoint HOST:PORT")
    shortage = None
    if slurm is None and any(cell.on_gpu for cell in pending):
        shortage = gpu_shortage(pending, visible_gpus(), matrix=True)
    if shortage:
        raise MatrixUsageError(f"{matrix.path}: {shortage}{cpu_sections_hint(matrix)}")
    if problem := data_problem([*pending, *(cell for cell, _ in searches)]):
        raise MatrixUsageError(f"{matrix.path}: {problem}")
    launch = make_launch(timeout_s, inactivity_timeout_s, matrix.run, rdzv_endpoint=rdzv_endpoint)
    launcher = LocalLauncher(launch) if slurm is None else slurm_launcher(launch, slurm, max_jobs, the_plan.source)
    prune = matrix.run.get("prune_after_oom", False) if prune_after_oom is None else prune_after_oom
    and_searches = f" and {len(searches)} searches" if searches else ""
    try:
        predicted_fail = predicted_failures(pending) if skip_predicted_fail else {}
    except NoMemorySize as exc:
        raise click.UsageError(str(exc)) from None
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{matrix.name}: {len(pending)} of {len(the_plan.cells)} cells to run{and_searches}, results in {the_plan.results_file}"
    )
    started = time.monotonic()
    shown = line_fields([*the_plan.cells, *(cell for cell, _ in searches)])
    statuses: Counter = Counter()
    tally = Tally(waiting=len(pending), queues=launcher.queues)
    progress = click.progressbar(
        length=len(pending) + PROBES_PER_SEARCH * len(searches),
        label=matrix.name,
        show_eta=True,
        show_pos=True,
        item_show_func=lambda c: c and f"{cell_line(c, shown)} [{tally}, {time.monotonic() - started:.0f} s elapsed]",
        file=sys.stderr,
        update_min_steps=0,
    )
    try:
        with progress if sys.stderr.isatty() else LinesOnly() as bar:
            bar.update(0, pending[0] if pending else searches[0][0])
            for number, (cell, record) in enumerate(
                run_cells(
                    the_plan,
                    launcher,
                    prune_after_oom=prune,
                    predicted_fail=predicted_fail,
                    wait=not detach,
                    tally=tally,
                ),
                start=1,
            ):
                statuses[outcome(record)] += 1
                if not sys.stderr.isatty():
                    place = f"{number}/{len(pending)}" if number <= len(pending) else "search probe"
                    click.echo(f"[{place}] {cell_line(cell, shown)}: {record_line(record)} [{tally}]", err=True)
                bar.update(1, pending[number] if number < len(pending) else None)
    except KeyboardInterrupt:
        click.echo("\nInterrupted: the cell in flight was stopped and not recorded; run again to continue.", err=True)
        sys.exit(130)
    except (OSError, FileError) as exc:
        raise click.ClickException(
            f"{the_plan.results_file}: {exc}; the cells recorded before are kept, run again to continue"
        ) from None
    summary = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    if detach:
        click.echo(f"{matrix.name}: detached with {tally}; pfcbench status {the_plan.results_dir} follows them")
        return
    click.echo(f"{matrix.name}: ran {sum(statuses.values())} cells in {time.monotonic() - started:.0f} s: {summary}; results in {the_plan.results_file}")  # fmt: skip


class LinesOnly:
    """The progress bar where stderr is not a terminal: none (click's would print its label alone), a line per cell."""

    def __enter__(self) -> LinesOnly:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def update(self, n_steps: int, current_item: object = None) -> None:
        return None


def slurm_launcher(launch, slurm, max_jobs: int, source):
    from bench.launch.slurm import SlurmLauncher

    return SlurmLauncher(launch, slurm, max_jobs, source)
