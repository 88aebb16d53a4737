"""pfcbench run: every pending cell of a matrix, one record each in its results folder."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bench.commands.launcher_options import with_launcher
from bench.commands.lines import cell_line, line_fields, outcome, record_line
from bench.commands.options import RERUN, InputError, MatrixUsageError, load_plan, with_matrix
from bench.commands.sweep import ledger_of
from bench.plan.search import PROBES_PER_SEARCH
from bench.plan.table import NoMemorySize, predicted_failures
from bench.store.files import FileError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from bench.config import Cell
    from bench.launch.base import Launcher
    from bench.launch.runner import Tally
    from bench.matrix import Matrix
    from bench.plan.build import Plan


@click.command()
@with_matrix
@with_launcher
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
@click.option(
    "--skip-predicted-fail",
    is_flag=True,
    help="Record cells whose predicted peak memory exceeds the memory per rank (max_memory_gib or the GPU's) as skipped.",
)
def run(
    matrix: Matrix,
    results_root: Path,
    launcher: Launcher,
    detach: bool,
    rerun: str | None,
    prune_after_oom: bool | None,
    skip_predicted_fail: bool,
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
    from bench.launch.runner import Tally, run_cells

    the_plan = load_plan(matrix, results_root, rerun)
    refuse_jobs_in_flight(the_plan, launcher)
    pending, searches = the_plan.pending(), the_plan.pending_searches()
    if not pending and not searches:
        click.echo(
            f"Nothing to run: all {len(the_plan.cells)} cells of {matrix.name} have a final record in {the_plan.results_file} (--rerun failed|all runs them again)."
        )
        return
    check_cells(launcher, matrix, [*pending, *(cell for cell, _ in searches)])
    prune = matrix.run.get("prune_after_oom", False) if prune_after_oom is None else prune_after_oom
    predicted_fail = skipped_as_predicted(pending) if skip_predicted_fail else {}
    and_searches = f" and {len(searches)} searches" if searches else ""
    click.echo(
        f"{matrix.name}: {len(pending)} of {len(the_plan.cells)} cells to run{and_searches}, results in {the_plan.results_file}"
    )
    started = time.monotonic()
    tally = Tally(waiting=len(pending), queues=launcher.queues)
    records = run_cells(
        the_plan, launcher.for_plan(the_plan.source), prune_after_oom=prune, predicted_fail=predicted_fail,
        wait=not detach, tally=tally,
    )  # fmt: skip
    try:
        statuses = show_progress(the_plan, records, tally, started)
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


def refuse_jobs_in_flight(the_plan: Plan, launcher: Launcher) -> None:
    """Refuse a run whose launcher cannot take over the jobs an earlier run left in flight (the ledger is
    checked either way, before anything is run, written or deleted)."""
    in_flight = ledger_of(the_plan.results_dir)
    if in_flight and not launcher.adopts:
        raise InputError(
            f"{the_plan.results_dir}: {len(in_flight)} Slurm jobs of this matrix are in flight; follow them with "
            f"pfcbench status / pfcbench collect {the_plan.results_dir}, or run with --launcher slurm to adopt them"
        )


def check_cells(launcher: Launcher, matrix: Matrix, cells: list[Cell]) -> None:
    """The launcher's own check of the cells it is to run, as one line naming the matrix."""
    from bench.launch.base import LaunchError

    try:
        launcher.check(cells, matrix)
    except LaunchError as exc:
        raise MatrixUsageError(f"{matrix.path}: {exc}") from None


def skipped_as_predicted(pending: list[Cell]) -> dict[str, str]:
    """Cell id: the predicted failure, for --skip-predicted-fail."""
    try:
        return predicted_failures(pending)
    except NoMemorySize as exc:
        raise click.UsageError(str(exc)) from None
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


def show_progress(the_plan: Plan, records: Iterator[tuple[Cell, dict]], tally: Tally, started: float) -> Counter:
    """Follow the run's records as they come: a progress bar on a terminal, else a line per cell; their outcomes."""
    pending, searches = the_plan.pending(), the_plan.pending_searches()
    shown = line_fields([*the_plan.cells, *(cell for cell, _ in searches)])
    statuses: Counter = Counter()
    progress = click.progressbar(
        length=len(pending) + PROBES_PER_SEARCH * len(searches),
        label=the_plan.matrix.name,
        show_eta=True,
        show_pos=True,
        item_show_func=lambda c: c and f"{cell_line(c, shown)} [{tally}, {time.monotonic() - started:.0f} s elapsed]",
        file=sys.stderr,
        update_min_steps=0,
    )
    with progress if sys.stderr.isatty() else LinesOnly() as bar:
        bar.update(0, pending[0] if pending else searches[0][0])
        for number, (cell, record) in enumerate(records, start=1):
            statuses[outcome(record)] += 1
            if not sys.stderr.isatty():
                place = f"{number}/{len(pending)}" if number <= len(pending) else "search probe"
                click.echo(f"[{place}] {cell_line(cell, shown)}: {record_line(record)} [{tally}]", err=True)
            bar.update(1, pending[number] if number < len(pending) else None)
    return statuses


class LinesOnly:
    """The progress bar where stderr is not a terminal: none (click's would print its label alone), a line per cell."""

    def __enter__(self) -> LinesOnly:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def update(self, n_steps: int, current_item: object = None) -> None:
        return None
