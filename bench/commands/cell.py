"""pfcbench cell: one cell as a torchrun job, its record printed."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bench.commands.launcher_options import with_local_launcher
from bench.commands.lines import describe, failure_line
from bench.commands.options import MatrixUsageError, cell_options
from bench.config import Cell
from bench.store.files import FileError, make_folder

if TYPE_CHECKING:
    from bench.launch.local import LocalLauncher


@click.command()
@cell_options
@with_local_launcher("HOST:PORT of the c10d rendezvous when --nnodes > 1.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result record as JSON.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the rank files and torchrun log here.",
)
def cell(as_json: bool, workdir: Path | None, launcher: LocalLauncher, **fields) -> None:
    """Run one cell as a torchrun job and print its result.

    For a cell of several nodes, run the same command on every node with --nnodes and the same
    --rdzv-endpoint; each node prints the record.

    \b
    Example:
        pfcbench cell --backbone none --classes 200000 --batch-size 128 --nproc 2 --sample-rate 0.1 --device cpu --json
        pfcbench cell --backbone r50 --classes 2000000 --batch-size 1024 --nproc 8 --nnodes 2 --rdzv-endpoint node1:29400
    """
    from bench.launch.base import LaunchError

    try:
        config = Cell(**fields)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        launcher.check([config])
    except LaunchError as exc:
        raise MatrixUsageError(str(exc)) from None
    if workdir is not None:
        try:
            check_workdir(workdir)
        except FileError as exc:
            raise click.UsageError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="pfcbench-cell-") as tmp:
        record, holds_rank0 = launcher.run_cell(config, workdir or Path(tmp))
    if not holds_rank0 and record["status"] != "ok":
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


def check_workdir(workdir: Path) -> None:
    """Create --workdir, which must be new or empty: rank files left from another run would be read as this one's."""
    try:
        leftover = workdir.is_dir() and next(workdir.iterdir(), None) is not None
    except OSError as exc:
        raise FileError(f"--workdir {workdir}: cannot read the folder: {exc.strerror}") from None
    if leftover:
        raise FileError(f"--workdir {workdir}: not empty; give a new or empty folder")
    make_folder(workdir, "--workdir")
