"""`pfcbench search`: the largest batch size or class count of a cell that runs without running out of memory."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bench.commands.launcher_options import with_local_launcher
from bench.commands.lines import failure_line, record_line
from bench.commands.options import (
    InputError,
    MatrixUsageError,
    cell_options,
    one_line,
    results_option,
    warn_skipped,
)
from bench.config import WHOLE_NUMBER_RANGES, Cell, check_number
from bench.plan.search import FIELDS, PROBE_STEPS, Answer, Probe
from bench.store.results import Results, ResultsError

if TYPE_CHECKING:
    from bench.launch.base import Launcher


@click.command("search")
@click.argument("field", type=click.Choice(FIELDS))
@cell_options(defaults=PROBE_STEPS)
@with_local_launcher()
@click.option(
    "--start",
    type=int,
    default=None,
    help="First value to probe.  [default: the memory model's prediction, else the cell's value of FIELD]",
)
@results_option("Probes are recorded in RESULTS/search/results.jsonl, and reused by a search run again.")
@click.option("--json", "as_json", is_flag=True, help="Print field, largest, smallest_oom and the probes' records.")
def search_command(
    field: str, start: int | None, results_root: Path, as_json: bool, launcher: Launcher, **fields
) -> None:
    """Find the largest FIELD (batch_size or classes) of a cell that runs without running out of memory.

    Each probe is a real cell with few steps in a fresh torchrun job; the search brackets the
    answer from the start value, then bisects until the smallest value that ran out of memory is
    within 5% of the largest that ran ok. Memory is the GPU's, or --max-memory-gib per rank (which
    the CPU needs). Interrupted and run again, a search reuses the probes it recorded.

    \b
    Example:
        pfcbench search classes --backbone none --batch-size 64 --nproc 2 --device cpu --max-memory-gib 1.5
        pfcbench search batch_size --backbone r50 --classes 1000000 --nproc 8 --precision fp16 --json
    """
    from bench.launch.base import LaunchError
    from bench.launch.runner import run_probe, sigterm_as_interrupt
    from bench.plan.search import ProbeFailed, search, start_value
    from bench.store.results import latest_by_cell

    config = searched_cell(field, start, fields)
    try:
        launcher.check([config])
    except LaunchError as exc:
        raise MatrixUsageError(str(exc)) from None
    results_dir = results_root / "search"
    probes = []
    try:
        with sigterm_as_interrupt():
            records = latest_by_cell(read_probes(results_dir).records)
            first = (lambda: start) if start is not None else functools.partial(start_value, config, field)
            for probe in search(config, field, first, records, run_probe(results_dir, launcher)):
                probes.append(probe)
                if not as_json:
                    click.echo(probe_line(field, probe))
    except KeyboardInterrupt:
        click.echo(
            "\nInterrupted: the probe in flight was stopped; run again to continue from the recorded probes.", err=True
        )
        sys.exit(130)
    except ProbeFailed as exc:
        raise click.ClickException(
            f"{field} {exc.value}: probe {exc.record['status']}: {failure_line(exc.record)}"
        ) from None
    answer = Answer.of(field, probes)
    say_answer(answer, config, results_dir, as_json)
    if answer.largest is None:
        sys.exit(1)


def searched_cell(field: str, start: int | None, fields: dict) -> Cell:
    """The cell a search starts from, and its --start checked; a usage error says what is wrong."""
    try:
        config = Cell(**fields)
        if not config.on_gpu and config.max_memory_gib is None:
            raise ValueError("a search on the CPU needs --max-memory-gib: the memory a probe may not exceed")
        if config.launched_nodes > 1:
            raise ValueError("a search runs cells on this machine; give --nnodes 1")
        if start is not None:
            check_number("--start", start, *WHOLE_NUMBER_RANGES[field])
            Cell(**{**fields, field: start})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return config


def say_answer(answer: Answer, config: Cell, results_dir: Path, as_json: bool) -> None:
    field = answer.field
    if as_json:
        click.echo(json.dumps(answer.to_dict(), indent=2))
    elif answer.largest is None:
        click.echo(
            f"No {field} fits: {answer.smallest_oom} ran out of memory, the smallest a cell of {config.world_size} ranks can have."
        )
    else:
        oom = f"{answer.smallest_oom} ran out of memory" if answer.smallest_oom else "no probe ran out of memory"
        click.echo(
            f"Largest {field} that fits: {answer.largest} ({oom}); {len(answer.probes)} probes, records in {results_dir / 'results.jsonl'}"
        )


def probe_line(field: str, probe: Probe) -> str:
    recorded = " (recorded before)" if probe.recorded_before else ""
    return f"probe {field} {probe.value}: {record_line(probe.record)}{recorded}"


def read_probes(results_dir: Path) -> Results:
    """The probes recorded in results_dir, its damaged lines counted on stderr; a folder that cannot
    hold them (a file in the way, results.jsonl not a file, a newer schema) is one line, exit 2."""
    from bench.store.results import read_results

    blocked = next((p for p in (results_dir, *results_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise InputError(f"--results: {one_line(str(blocked))} is a file, not a folder; give a results folder")
    try:
        results = read_results(results_dir / "results.jsonl")
    except ResultsError as exc:
        raise InputError(one_line(str(exc))) from None
    warn_skipped(results)
    return results
