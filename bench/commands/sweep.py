"""pfcbench status and pfcbench collect: follow a Slurm sweep that no process watches (run --detach).

Both read the results folder's ledger of jobs in flight (bench/launch/ledger.py); neither submits a job.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bench.commands.options import InputError

if TYPE_CHECKING:
    from bench.launch.ledger import InFlight

results_dir_argument = click.argument("results_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))


def ledger_of(results_dir: Path) -> dict[str, InFlight]:
    """The jobs in flight, each checked; a damaged ledger, or one entry that points outside the folder, is one line."""
    from bench.launch.ledger import read_ledger

    try:
        return read_ledger(results_dir)
    except ValueError as exc:
        raise InputError(str(exc)) from None


@click.command("status")
@results_dir_argument
def status(results_dir: Path) -> None:
    """Say per cell of a Slurm sweep whether its job is queued, running, done or lost.

    A done job not yet recorded is recorded by pfcbench collect or run; a lost one runs again.

    \b
    Example:
        pfcbench status results/rtx3080
    """
    from bench.launch.slurm import job_word
    from bench.store.results import latest_by_cell, read_records

    counts: Counter = Counter()
    for job_id, entry in ledger_of(results_dir).items():
        word = job_word(job_id, entry.workdir)  # the rule the sweep itself follows
        counts[word.split()[0]] += 1
        click.echo(f"{entry.cell.cell_id}  job {job_id}  {word}")
    results_file = results_dir / "results.jsonl"
    recorded = latest_by_cell(read_records(results_file)) if results_file.exists() else {}
    for cell_id, record in recorded.items():
        counts["recorded"] += 1
        click.echo(f"{cell_id}  recorded {record['status']}")
    click.echo(", ".join(f"{n} {word}" for word, n in sorted(counts.items())) or "nothing in flight or recorded")


@click.command("collect")
@results_dir_argument
def collect(results_dir: Path) -> None:
    """Record the Slurm jobs of a sweep that have ended since it was submitted; submit nothing.

    \b
    Example:
        pfcbench collect results/rtx3080
    """
    from bench.commands.options import load_plan_again
    from bench.launch.runner import Tally, run_cells
    from bench.launch.slurm import SlurmLauncher
    from bench.launch.watchdog import Limits
    from bench.plan.build import PlanSource

    by_source: dict[str, tuple[PlanSource, list]] = {}
    for entry in ledger_of(results_dir).values():
        key = json.dumps(entry.source.to_dict(), sort_keys=True)
        by_source.setdefault(key, (entry.source, []))[1].append(entry.cell)
    plans = [
        dataclasses.replace(load_plan_again(results_dir, source), cells=cells) for source, cells in by_source.values()
    ]
    if not plans:  # nothing in flight: still the folder of a sweep, and nothing is written into it
        click.echo(f"{load_plan_again(results_dir, PlanSource()).matrix.name}: recorded 0 cells; nothing in flight")
        return
    matrix = plans[0].matrix
    launcher = SlurmLauncher(Limits.of(None, None, matrix.run))  # the jobs a ledger names are Slurm's
    tally = Tally()
    recorded = []
    for plan in plans:  # one plan per run that left jobs in flight
        in_flight = Tally()
        recorded += run_cells(plan, launcher, submit=False, wait=False, tally=in_flight)
        tally.queued, tally.running = tally.queued + in_flight.queued, tally.running + in_flight.running
    for cell, record in recorded:
        click.echo(f"{cell.cell_id}: {record['status']}")
    click.echo(f"{matrix.name}: recorded {len(recorded)} cells; {tally.queued + tally.running} jobs still in flight")
