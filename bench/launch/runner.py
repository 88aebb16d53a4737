"""The sweep: run every pending cell of a matrix and append one record per cell to its results.

A crash, a hang, an out-of-memory, Ctrl-C, SIGTERM or kill -9 of the runner costs at most the cell
in flight: every finished cell is already on disk, and the next run skips it.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.config import Cell
from bench.launch.base import Job, Launcher
from bench.launch.ledger import SCRATCH
from bench.plan.build import Plan, oom_implies
from bench.plan.search import ProbeFailed, search, start_value
from bench.rank.host import describe_machine
from bench.store.files import FileError, read_text, remove
from bench.store.records import oom_reason, skipped_record
from bench.store.results import (
    append_record,
    save_env,
    write_atomic,
)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so that the cell in flight is killed and nothing is torn."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(kw_only=True)
class Tally:
    """What the progress line shows: cells not yet submitted, jobs queued by the scheduler, running, done."""

    waiting: int = 0
    queued: int = 0
    running: int = 0
    done: int = 0
    queues: bool = False
    """Whether a scheduler holds jobs in a queue (Launcher.queues); a local run has cells to run, not to submit."""

    def count(self, waiting: int, in_flight: list[Job]) -> None:
        """Set the counts of the cells not started yet and of the jobs in flight, queued or running."""
        self.waiting, self.running = waiting, sum(job.running for job in in_flight)
        self.queued = len(in_flight) - self.running

    def __str__(self) -> str:
        if not self.queues:
            return f"{self.done} done, {self.running} running, {self.waiting} to run"
        return f"{self.done} done, {self.running} running, {self.queued} queued, {self.waiting} to submit"


def run_jobs(
    launcher: Launcher,
    results_dir: Path,
    cells: list[Cell],
    finish: Callable[[Cell, dict, bool], dict],
    *,
    skip_reason: Callable[[Cell], str | None] = lambda cell: None,
    submit: bool = True,
    wait: bool = True,
    tally: Tally | None = None,
) -> Iterator[tuple[Cell, dict]]:
    """The one loop: keep up to launcher.slots cells in flight, and record each job as it ends, in the order they end.

    Jobs an earlier run left in flight are adopted first, never submitted again. finish(cell,
    record, records_here) completes and appends a record. submit=False records only adopted jobs
    (pfcbench collect); wait=False fills the slots, records what has ended and returns, leaving the
    rest in flight (--detach). A job lost without a trace runs again, once. An interrupt cancels
    every job in flight.
    """
    tally = tally or Tally()
    in_flight = launcher.adopt(results_dir, cells)
    adopted = {job.cell.cell_id for job in in_flight}
    queue = [cell for cell in cells if cell.cell_id not in adopted] if submit else []
    lost: set[str] = set()
    try:
        while queue or in_flight:
            while queue and len(in_flight) < launcher.slots:
                cell = queue.pop(0)
                reason = skip_reason(cell)
                if reason:
                    tally.done += 1
                    tally.count(len(queue), in_flight)
                    yield cell, finish(cell, skipped_record(cell, reason), True)
                else:
                    in_flight.append(launcher.submit(cell, results_dir))
            for job in list(in_flight):
                ended = launcher.poll(job)
                if ended is None:
                    continue
                in_flight.remove(job)
                if ended.lost and job.cell.cell_id not in lost:
                    lost.add(job.cell.cell_id)
                    launcher.release(job, results_dir)
                    queue[:0] = [job.cell] if submit else []
                    continue
                record = finish(job.cell, *launcher.collect(job, ended, results_dir))
                launcher.release(job, results_dir)  # the record is on disk: the job is no longer in flight
                tally.done += 1
                tally.count(len(queue), in_flight)  # the job that ended is no longer counted as running
                yield job.cell, record
            tally.count(len(queue), in_flight)
            if not wait:
                return
            if in_flight:
                time.sleep(launcher.poll_s)
    except BaseException:
        for job in in_flight:
            launcher.cancel(job, results_dir)
        raise


def run_cells(
    plan: Plan,
    launcher: Launcher,
    *,
    prune_after_oom: bool = False,
    predicted_fail: dict[str, str] | None = None,
    submit: bool = True,
    wait: bool = True,
    tally: Tally | None = None,
) -> Iterator[tuple[Cell, dict]]:
    """Run the pending cells, yielding each (cell, record) once the record is on disk, then the searches.

    Cells in predicted_fail (cell id: the prediction) are recorded skipped with it as the reason.
    submit and wait are run_jobs'; the searches run only in a sweep that submits and waits.
    """
    predicted_fail = predicted_fail or {}
    plan.results_dir.mkdir(parents=True, exist_ok=True)
    env = save_env(plan.results_dir, describe_machine())
    write_atomic(plan.results_dir / "matrix.toml", read_text(plan.matrix.path))
    latest = dict(plan.latest)

    def skip_reason(cell: Cell) -> str | None:
        cause = oom_implies(cell, latest) if prune_after_oom else None
        return predicted_fail.get(cell.cell_id) or (oom_reason(cause) if cause else None)

    def finish(cell: Cell, record: dict, records_here: bool) -> dict:
        record.update(matrix=plan.matrix.name, sections=plan.sections_of(cell), overrides=plan.matrix.overrides)
        record.setdefault("env", env)  # a Slurm job's record names its compute nodes' description
        if records_here:
            append_record(plan.results_file, record)
            latest[cell.cell_id] = record
        return record

    with sigterm_as_interrupt():
        yield from run_jobs(
            launcher, plan.results_dir, plan.pending(), finish, skip_reason=skip_reason, submit=submit, wait=wait,
            tally=tally,
        )  # fmt: skip
        for start, field in plan.pending_searches() if submit and wait else []:
            extra = {
                "matrix": plan.matrix.name,
                "sections": plan.search_sections_of(start, field),
                "overrides": plan.matrix.overrides,
            }
            probe = run_probe(plan.results_dir, launcher, extra)
            try:
                for found in search(start, field, functools.partial(start_value, start, field), latest, probe):
                    if not found.recorded_before:
                        latest[found.record["cell_id"]] = found.record
                        yield Cell.from_dict(found.record["config"]), found.record
            except ProbeFailed as failed:  # recorded; this search stops, the next one runs
                yield Cell.from_dict(failed.record["config"]), failed.record
    with contextlib.suppress(FileError):  # only when empty: the scratch folders of finished cells are gone
        remove(plan.results_dir / SCRATCH, plan.results_dir, only_if_empty=True)


def run_probe(results_dir: Path, launcher: Launcher, extra: dict | None = None) -> Callable[[Cell, dict], dict]:
    """A function probe(cell, more) that runs a cell, appends its record (with extra and more) and returns it."""
    results_dir.mkdir(parents=True, exist_ok=True)
    env = save_env(results_dir, describe_machine())

    def probe(cell: Cell, more: dict | None = None) -> dict:
        def finish(cell: Cell, record: dict, records_here: bool) -> dict:
            record.update(extra or {}, **(more or {}))
            record.setdefault("env", env)
            if records_here:
                append_record(results_dir / "results.jsonl", record)
            return record

        [(_, record)] = run_jobs(launcher, results_dir, [cell], finish)
        return record

    return probe
