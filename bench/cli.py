"""The pfcbench command line.

The parent process never imports torch, pandas or the launchers at start-up: each command imports
what it needs when it runs, so that `pfcbench --help`, plan, report, compare and env answer at once.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bench import __version__
from bench.config import Cell
from bench.files import FileError, make_folder
from bench.lines import cell_line, describe, failure_line, line_fields, outcome, record_line
from bench.matrix_commands import matrices, plan
from bench.options import (
    RERUN,
    InputError,
    MatrixUsageError,
    cell_options,
    load_plan,
    make_launch,
    rdzv_option,
    timeout_options,
    with_launcher,
    with_matrix,
)
from bench.plan import NoMemorySize, cpu_sections_hint, predicted_failures
from bench.results_commands import compare_command, report_command
from bench.search import PROBES_PER_SEARCH
from bench.search_command import search_command

if TYPE_CHECKING:
    from bench.matrix import Matrix
    from bench.slurm import SlurmOptions


@click.group()
@click.version_option(__version__, prog_name="pfcbench")
def main() -> None:
    """Benchmark Partial FC training throughput and render arcface_torch-style reports."""


@main.command()
@cell_options
@timeout_options
@rdzv_option("HOST:PORT of the c10d rendezvous when --nnodes > 1.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result record as JSON.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the rank files and torchrun log here.",
)
def cell(as_json: bool, workdir: Path | None, timeout_s, inactivity_timeout_s, rdzv_endpoint, **fields) -> None:
    """Run one cell as a torchrun job and print its result.

    For a cell of several nodes, run the same command on every node with --nnodes and the same
    --rdzv-endpoint; each node prints the record.

    \b
    Example:
        pfcbench cell --backbone none --classes 200000 --batch-size 128 --nproc 2 --sample-rate 0.1 --device cpu --json
        pfcbench cell --backbone r50 --classes 2000000 --batch-size 1024 --nproc 8 --nnodes 2 --rdzv-endpoint node1:29400
    """
    from bench.data.check import data_problem
    from bench.launch import gpu_shortage, run_cell, visible_gpus
    from bench.records import holds_rank0

    try:
        config = Cell(**fields)
        if config.launched_nodes > 1 and rdzv_endpoint is None:
            raise ValueError(f"a cell of {config.nnodes} nodes needs --rdzv-endpoint HOST:PORT")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    launch = make_launch(timeout_s, inactivity_timeout_s, rdzv_endpoint=rdzv_endpoint, rdzv_id=config.cell_id)
    shortage = gpu_shortage([config], visible_gpus()) if config.device == "cuda" else None
    if shortage:
        raise MatrixUsageError(shortage)
    if problem := data_problem([config]):
        raise MatrixUsageError(problem)
    if workdir is not None:
        try:
            check_workdir(workdir)
        except FileError as exc:
            raise click.UsageError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="pfcbench-cell-") as tmp:
        record = run_cell(config, workdir or Path(tmp), launch)
        if not holds_rank0(config, workdir or Path(tmp)) and record["status"] != "ok":
            click.echo(
                "Error: the cell failed; this node did not hold rank 0, see the record on the node that did.", err=True
            )
            sys.exit(1)
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(describe(record))
    if record["status"] != "ok":
        click.echo(f"Error: cell {record['status']}: {failure_line(record)}", err=True)
        sys.exit(1)


class LinesOnly:
    """The progress bar where stderr is not a terminal: none (click's would print its label alone), a line per cell."""

    def __enter__(self) -> LinesOnly:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def update(self, n_steps: int, current_item: object = None) -> None:
        return None


def check_workdir(workdir: Path) -> None:
    """Create --workdir, which must be new or empty: rank files left from another run would be read as this one's."""
    try:
        leftover = workdir.is_dir() and next(workdir.iterdir(), None) is not None
    except OSError as exc:
        raise FileError(f"--workdir {workdir}: cannot read the folder: {exc.strerror}") from None
    if leftover:
        raise FileError(f"--workdir {workdir}: not empty; give a new or empty folder")
    make_folder(workdir, "--workdir")


@main.command()
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
    from bench.data.check import data_problem
    from bench.launch import LocalLauncher, gpu_shortage, visible_gpus
    from bench.runner import Tally, run_cells

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
    if slurm is None and any(cell.device == "cuda" for cell in pending):
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


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the whole description as JSON.")
def env(as_json: bool) -> None:
    """Print the server spec of this machine, as the report's "Test Server Spec" table shows it, with the CPU's cores and threads.

    \b
    Example:
        pfcbench env --json
    """
    from tabulate import tabulate

    from bench.machine import describe_machine, server_spec

    machine = describe_machine()
    if as_json:
        click.echo(json.dumps(machine, indent=2))
        return
    click.echo(tabulate(server_spec(machine, cpu_counts=True), headers=["Key", "Value"], tablefmt="github"))


def slurm_launcher(launch, slurm, max_jobs: int, source):
    from bench.slurm import SlurmLauncher

    return SlurmLauncher(launch, slurm, max_jobs, source)


from bench.data.commands import data, dataset  # noqa: E402 -- the record-data commands
from bench.sweep_commands import collect, ledger_of, status  # noqa: E402 -- following a detached Slurm sweep

main.add_command(search_command)
main.add_command(plan)
main.add_command(matrices)
main.add_command(report_command)
main.add_command(compare_command)
main.add_command(dataset)
main.add_command(data)
main.add_command(status)
main.add_command(collect)


if __name__ == "__main__":
    main()
