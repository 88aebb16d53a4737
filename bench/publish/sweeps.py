"""What a site is made of: each results folder read as a Sweep, and the sweeps grouped by matrix and machine.

A machine is told apart by its environment's hardware (host name, CPU, GPUs): two folders of one
matrix on the same hardware are runs of one machine at two dates (their history is each cell's
records in time), on different hardware they are machines side by side, as `report A B` shows them.
The software (torch, driver) is left out of the key on purpose: a new torch on the same machine is
history to follow, not another machine.
"""

from __future__ import annotations

import datetime
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.config import Cell
from bench.matrix import Matrix
from bench.numbers import is_number
from bench.report.fields import cell_label
from bench.report.machines import machine_name, row_fields
from bench.report.predicted import PredictedMemoryColumn, predicted_columns
from bench.report.read import read_run, run_env
from bench.report.tables import Added
from bench.store.results import Results, latest_by_cell
from bench.verdicts import nonfinite, training_speed

TALLY = ("ok", "Fail", "NaN", "Error")
"""What the index counts of a sweep's cells: a training speed, out of memory, a loss that was not finite, and
any other failure (error, timeout, an ok record with no usable samples/sec)."""


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """One results folder: the matrix it ran, its records, the machine of most of its cells."""

    folder: Path
    matrix: Matrix
    results: Results
    latest: dict[str, dict]
    """The newest record of each cell id."""
    env: dict
    notes: tuple[str, ...]
    """The report's own notes about the records (several environments)."""
    added: tuple[Added, ...]
    """The time model's column where the machine's GPU is in the catalogue."""

    @property
    def machine(self) -> str:
        return machine_name(self.env)

    @property
    def hardware(self) -> str:
        return hardware_key(self.env)

    @property
    def reported(self) -> list[dict]:
        """The latest record of each cell the matrix lists, in its order."""
        return [self.latest[c.cell_id] for c in self.matrix.cells() if c.cell_id in self.latest]

    @property
    def started(self) -> float | None:
        """When its newest reported record started (seconds since the epoch)."""
        return max((record_time(r) for r in self.reported if record_time(r) is not None), default=None)

    def tally(self) -> dict[str, int]:
        counts = Counter(outcome(r) for r in self.reported)
        return {"Cells": len(self.matrix.cells()), **{name: counts[name] for name in TALLY}}


def read_sweep(folder: Path) -> Sweep:
    """A results folder as the markdown report reads it; ReportError (a ValueError), one line, where it cannot be."""
    matrix, results = read_run(folder)
    latest = latest_by_cell(results.records)
    env, note = run_env(Path(folder), matrix, latest)
    added = predicted_columns(env)
    added += tuple(PredictedMemoryColumn.of(column.gpu, matrix.cells()) for column in added)
    return Sweep(
        folder=Path(folder),
        matrix=matrix,
        results=results,
        latest=latest,
        env=env,
        notes=(note,) if note else (),
        added=added,
    )


def hardware_key(env: dict) -> str:
    """What tells two machines apart: host name, CPU and GPUs, as one text."""
    gpus = [gpu.get("name") for gpu in env.get("gpus") or [] if isinstance(gpu, dict)]
    return json.dumps([env.get("hostname"), env.get("cpu_model"), env.get("cpu_sockets"), gpus])


def outcome(record: dict) -> str:
    """Which of TALLY a cell's latest record counts as; Skipped for a cell not run on purpose."""
    if training_speed(record) is not None:
        return "ok"
    if nonfinite(record):
        return "NaN"
    if record.get("status") == "oom":
        return "Fail"
    return "Skipped" if record.get("status") == "skipped" else "Error"


def record_time(record: dict | None) -> float | None:
    started = (record or {}).get("started_at")
    return float(started) if is_number(started) else None


def date_text(seconds: float | None) -> str:
    """A record's start as a reader takes it (UTC, to the minute); "—" where it is not recorded."""
    if seconds is None:
        return "—"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso_date(seconds: float | None) -> str | None:
    """A record's start as a chart's date axis reads it (UTC)."""
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def same_machine(sweeps: list[Sweep]) -> dict[tuple[str, str], list[Sweep]]:
    """The sweeps of each (matrix, machine), oldest first: the runs whose history a page shows."""
    groups: dict[tuple[str, str], list[Sweep]] = {}
    for sweep in sweeps:
        groups.setdefault((sweep.matrix.name, sweep.hardware), []).append(sweep)
    return {key: sorted(group, key=lambda s: s.started or 0.0) for key, group in groups.items()}


def across_machines(sweeps: list[Sweep]) -> dict[str, list[Sweep]]:
    """Matrix name: the newest sweep of each machine that ran it, where two machines or more did."""
    newest: dict[str, dict[str, Sweep]] = {}
    for (matrix, machine), runs in same_machine(sweeps).items():
        newest.setdefault(matrix, {})[machine] = runs[-1]
    return {matrix: list(found.values()) for matrix, found in newest.items() if len(found) > 1}


@dataclass(frozen=True)
class CellHistory:
    """One cell's records across the runs of one machine, oldest first."""

    cell: Cell
    label: str
    records: list[dict]


def histories(runs: list[Sweep]) -> list[CellHistory]:
    """The cells with more than one record in the runs (one folder's reruns, or several folders), in matrix order."""
    cells = list({c.cell_id: c for run in runs for c in run.matrix.cells()}.values())
    records: dict[str, dict[str, dict]] = {}
    for run in runs:
        for record in run.results.records:
            key = json.dumps([record["cell_id"], record.get("started_at"), record.get("duration_s")], default=str)
            records.setdefault(record["cell_id"], {})[key] = record  # a folder given twice counts once
    fields = row_fields(cells)
    found = []
    for cell in cells:
        kept = sorted(records.get(cell.cell_id, {}).values(), key=lambda r: record_time(r) or 0.0)
        if len(kept) > 1:
            found.append(CellHistory(cell, cell_label(cell, fields), kept))
    return found
