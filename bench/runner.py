"""The sweep: run every pending cell of a matrix and append one record per cell to its results.

A crash, a hang, an out-of-memory, Ctrl-C, SIGTERM or kill -9 of the runner costs at most the cell
in flight: every finished cell is already on disk, and the next run skips it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import shutil
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.config import Cell
from bench.files import read_text
from bench.launch import Launch, run_cell
from bench.machine import describe_machine
from bench.matrix import Matrix
from bench.records import holds_rank0, oom_reason, skipped_record
from bench.results import FAILED, FINAL, Results, append_record, latest_by_cell, read_results, save_env, write_atomic
from bench.search import ProbeFailed, is_settled, search, start_value
from bench.slurm import SlurmOptions, run_cell_slurm


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What a run of a matrix would do: each cell with its newest record, if any."""

    matrix: Matrix
    results_dir: Path
    cells: list[Cell]
    latest: dict[str, dict]
    rerun: str | None = None
    results: Results | None = None
    """What was read from the results file, with the lines skipped as not records."""
    sections: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Cell id -> titles of the sections that hold it."""

    @property
    def results_file(self) -> Path:
        return self.results_dir / "results.jsonl"

    def pending(self) -> list[Cell]:
        return [cell for cell in self.cells if needs_run(self.latest.get(cell.cell_id), self.rerun)]

    def pending_searches(self) -> list[tuple[Cell, str]]:
        """The searches whose recorded probes do not answer them yet."""
        return [(cell, field) for cell, field in self.matrix.searches() if not is_settled(cell, field, self.latest)]

    def sections_of(self, cell: Cell) -> list[str]:
        return self.sections.get(cell.cell_id, [])

    def search_sections_of(self, cell: Cell, field: str) -> list[str]:
        """Titles of the sections that search field from this cell."""
        return [
            s.title
            for s in self.matrix.sections
            if s.search == field and any(r.cell.cell_id == cell.cell_id for r in s.rows)
        ]


def needs_run(record: dict | None, rerun: str | None) -> bool:
    """A cell runs when it has no final record, or when --rerun asks for it."""
    if record is None or record.get("status") not in FINAL:
        return True
    return rerun == "all" or (rerun == "failed" and record["status"] in FAILED)


def make_plan(matrix: Matrix, results_root: Path, rerun: str | None = None) -> Plan:
    results_dir = results_root / matrix.name
    results = read_results(results_dir / "results.jsonl")
    sections: dict[str, list[str]] = {}
    for section in (s for s in matrix.sections if s.search is None):
        for row in section.rows:
            titles = sections.setdefault(row.cell.cell_id, [])
            if section.title not in titles:
                titles.append(section.title)
    return Plan(
        matrix=matrix,
        results_dir=results_dir,
        cells=matrix.cells(),
        latest=latest_by_cell(results.records),
        rerun=rerun,
        results=results,
        sections=sections,
    )


def oom_implies(cell: Cell, records: dict[str, dict]) -> dict | None:
    """An oom record of the same config at a batch no larger than this cell's, if there is one."""
    for record in records.values():
        if record.get("status") != "oom":
            continue
        try:
            other = Cell.from_dict(record["config"])
        except ValueError:  # a record of a cell this version cannot build
            continue
        if other.batch_size <= cell.batch_size and dataclasses.replace(other, batch_size=cell.batch_size) == cell:
            return record
    return None


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


def run_cells(
    plan: Plan,
    launch: Launch,
    *,
    prune_after_oom: bool = False,
    slurm: SlurmOptions | None = None,
    predicted_fail: dict[str, str] | None = None,
) -> Iterator[tuple[Cell, dict]]:
    """Run the pending cells one by one, yielding each (cell, record) once the record is on disk.

    With slurm, each cell is a Slurm job submitted from here instead of a torchrun on this node.
    Cells in predicted_fail (cell id: the prediction) are recorded skipped with it as the reason.
    """
    predicted_fail = predicted_fail or {}
    plan.results_dir.mkdir(parents=True, exist_ok=True)
    env = save_env(plan.results_dir, describe_machine())
    write_atomic(plan.results_dir / "matrix.toml", read_text(plan.matrix.path))
    latest = dict(plan.latest)
    with sigterm_as_interrupt():
        for cell in plan.pending():
            cause = oom_implies(cell, latest) if prune_after_oom else None
            reason = predicted_fail.get(cell.cell_id) or (oom_reason(cause) if cause else None)
            record, records_here = (
                (skipped_record(cell, reason), True) if reason else run_one(cell, plan.results_dir, launch, slurm)
            )
            record.update(matrix=plan.matrix.name, sections=plan.sections_of(cell), overrides=plan.matrix.overrides)
            record.setdefault("env", env)  # a Slurm job's record names its compute nodes' description
            if records_here:
                append_record(plan.results_file, record)
                latest[cell.cell_id] = record
            yield cell, record
        for start, field in plan.pending_searches():
            extra = {
                "matrix": plan.matrix.name,
                "sections": plan.search_sections_of(start, field),
                "overrides": plan.matrix.overrides,
            }
            probe = run_probe(plan.results_dir, launch, extra, slurm)
            try:
                for found in search(start, field, functools.partial(start_value, start, field), latest, probe):
                    if not found.recorded_before:
                        latest[found.record["cell_id"]] = found.record
                        yield Cell.from_dict(found.record["config"]), found.record
            except ProbeFailed as failed:  # recorded; this search stops, the next one runs
                yield Cell.from_dict(failed.record["config"]), failed.record
    with contextlib.suppress(OSError):
        (plan.results_dir / "work").rmdir()  # only when empty: the scratch folders of finished cells are gone


def run_probe(
    results_dir: Path, launch: Launch, extra: dict | None = None, slurm: SlurmOptions | None = None
) -> Callable[[Cell, dict], dict]:
    """A function probe(cell, more) that runs a cell, appends its record (with extra and more) and returns it."""
    results_dir.mkdir(parents=True, exist_ok=True)
    env = save_env(results_dir, describe_machine())

    def probe(cell: Cell, more: dict | None = None) -> dict:
        record, records_here = run_one(cell, results_dir, launch, slurm)
        record.update(extra or {}, **(more or {}))
        record.setdefault("env", env)
        if records_here:
            append_record(results_dir / "results.jsonl", record)
        return record

    return probe


def describe_compute_nodes(results_dir: Path, workdir: Path, record: dict) -> None:
    """Keep the description of the nodes a Slurm job ran on, with the GPUs its ranks used; the record points at it.

    The machine that submits the jobs (a login node, often without GPUs) is named apart.
    """
    described = sorted(workdir.glob("machine-*.json"))
    if not described:
        return
    env = json.loads(described[0].read_text())
    env["gpus"] = [
        {"index": i, "name": gpu.get("name"), "memory_mib": gpu.get("memory_mib"), "uuid": gpu.get("uuid"),
         "host": gpu["host"], "rank": gpu["rank"]}
        for i, gpu in enumerate(record["gpus"])
    ]  # fmt: skip
    env.update(launcher="slurm", nodes=record["hosts"], submitted_from=socket.gethostname())
    record["env"] = save_env(results_dir, env)


def run_one(cell: Cell, results_dir: Path, launch: Launch, slurm: SlurmOptions | None = None) -> tuple[dict, bool]:
    """Run a cell in a scratch folder of this node; return its record and whether this node records it.

    Of a cell that spans several nodes, the node that held global rank 0 records it; the scratch
    folder is per node, so the nodes may share the results folder. The torchrun log of a cell
    that did not finish ok is kept.
    """
    workdir = results_dir / "work" / f"{cell.cell_id}.{socket.gethostname()}"
    shutil.rmtree(workdir, ignore_errors=True)
    launch = dataclasses.replace(launch, rdzv_id=cell.cell_id)
    record = run_cell_slurm(cell, workdir, launch, slurm) if slurm else run_cell(cell, workdir, launch)
    records_here = slurm is not None or holds_rank0(cell, workdir)
    if slurm is not None and record["status"] == "ok":
        describe_compute_nodes(results_dir, workdir, record)
    if record["status"] != "ok" or record.get("teardown_error"):
        logs = results_dir / "logs"
        logs.mkdir(exist_ok=True)
        shutil.copyfile(workdir / "torchrun.log", logs / f"{cell.cell_id}.log")
        record["log"] = f"logs/{cell.cell_id}.log"
    shutil.rmtree(workdir, ignore_errors=True)
    return record, records_here
