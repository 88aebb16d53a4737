"""The in-flight ledger of a results folder: which Slurm job runs which cell, from which scratch folder.

An entry is written (fsync, atomic rename) before pfcbench waits on the job, and removed only
once the cell's record is on disk. So when the submitting process dies (kill -9, a lost SSH
session, a reboot of the login node), the next `pfcbench run` of the matrix finds every job it left
in flight and adopts it instead of submitting the cell again: no cell is ever in flight twice.
Each entry also keeps what the run built its plan from (PlanSource), so that `pfcbench collect`
records the job as that run would have: with its overrides and sections.

The ledger belongs to its results folder: each entry names that folder (resolved) and its scratch
folder relative to it, so that a copy of the folder never acts on the original's jobs and every
working folder reads the same ledger. A scratch folder is resolved and must lie inside the folder's
scratch area (results/<matrix>/work) before anything reads, appends to or deletes it; any entry
that is damaged or points elsewhere is a LedgerError, one line naming the entry and key.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from bench.config import Cell
from bench.plan.build import PlanSource
from bench.store.files import FileError, read_text, remove
from bench.store.results import write_atomic

LEDGER = "in-flight.json"
SCRATCH = "work"
"""The results folder's scratch area: one folder per cell in flight, and nothing pfcbench did not make."""
JOB_ID = re.compile(r"\d+(_\d+)?")
"""A Slurm job id: digits, or digits _ digits for a task of a job array; nothing a command would read as an option."""
REQUIRED = ("cell_id", "config", "workdir")


class LedgerError(ValueError):
    """A ledger that cannot be acted on; the text is one line naming the file, the job and the key."""


@dataclass(frozen=True, kw_only=True)
class InFlight:
    """One job of the ledger, checked: its cell, and its scratch folder resolved inside the scratch area."""

    job_id: str
    cell: Cell
    workdir: Path
    source: PlanSource


def ledger_path(results_dir: Path) -> Path:
    return results_dir / LEDGER


def scratch_area(results_dir: Path) -> Path:
    """results/<matrix>/work, as an absolute path; the only place a ledger's scratch folders may lie."""
    return Path(results_dir).resolve() / SCRATCH


def read_entries(results_dir: Path) -> dict[str, dict]:
    """The ledger as written (job id -> entry); empty when nothing is in flight. Its entries are not checked."""
    path = ledger_path(results_dir)
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        entries = json.loads(read_text(path))
    except FileError as exc:
        raise LedgerError(str(exc)) from None
    except ValueError as exc:
        raise LedgerError(f"{path}: not a ledger of jobs in flight ({exc})") from None
    if not isinstance(entries, dict):
        raise LedgerError(f"{path}: expected an object of job id -> entry, not {type(entries).__name__}")
    for job_id in entries:
        if not JOB_ID.fullmatch(job_id):
            raise LedgerError(f"{path}: {job_id!r} is not a Slurm job id (digits, or digits_digits)")
    return entries


def read_ledger(results_dir: Path) -> dict[str, InFlight]:
    """Job id -> the job in flight, every entry checked; LedgerError names the first that cannot be acted on.

    An entry is {cell_id, config, workdir, results_dir, submitted_at, plan}; plan is a PlanSource's dict
    (PlanSource.of_entry reads it). An entry written by an earlier version has neither plan nor results_dir,
    and its workdir is absolute or relative to the working folder it was written from.
    """
    path = ledger_path(results_dir)
    jobs = {}
    for job_id, entry in read_entries(results_dir).items():
        try:
            jobs[job_id] = checked(results_dir, job_id, entry)
        except ValueError as exc:
            raise LedgerError(f"{path}: job {job_id}: {exc}") from None
    return jobs


def checked(results_dir: Path, job_id: str, entry: object) -> InFlight:
    """The entry as a job in flight; ValueError says which key is wrong."""
    if not isinstance(entry, dict):
        raise ValueError(f"expected an object with {', '.join(REQUIRED)}, not {type(entry).__name__}")
    for key in REQUIRED:
        if key not in entry:
            raise ValueError(f"no key {key!r}")
    if not isinstance(entry["config"], dict):
        raise ValueError(f"key 'config': expected an object of cell fields, not {type(entry['config']).__name__}")
    try:
        cell = Cell.from_dict(entry["config"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"key 'config': {exc}") from None
    if entry["cell_id"] != cell.cell_id:
        raise ValueError(f"key 'cell_id': {entry['cell_id']!r} is not the id of its config ({cell.cell_id})")
    owner = entry.get("results_dir")
    here = Path(results_dir).resolve()
    if owner is not None and owner != str(here):
        raise ValueError(
            f"key 'results_dir': the job belongs to the results folder {owner}, not {here} (a copy?); "
            f"follow it with pfcbench status {owner}"
        )
    return InFlight(
        job_id=job_id, cell=cell, workdir=scratch_folder(results_dir, entry["workdir"], owner is not None),
        source=PlanSource.of_entry(entry),
    )  # fmt: skip


def scratch_folder(results_dir: Path, workdir: object, relative_to_results: bool = True) -> Path:
    """The entry's scratch folder, resolved (symlinks followed); ValueError unless it lies inside the scratch area.

    A workdir is relative to the results folder. One written by an earlier version (relative_to_results
    False) is absolute, or relative to a working folder unknown here: then only its last part is kept,
    inside this results folder's scratch area, as that version always placed it.
    """
    if not isinstance(workdir, str) or not workdir:
        raise ValueError(f"key 'workdir': expected a folder path, not {workdir!r}")
    given = Path(workdir)
    if relative_to_results:
        folder = Path(results_dir) / given
    elif given.is_absolute():
        folder = given
    elif given.parent.name == SCRATCH:
        folder = Path(results_dir) / SCRATCH / given.name
    else:
        folder = Path(results_dir) / given
    resolved, area = folder.resolve(), scratch_area(results_dir)
    if resolved == area or not resolved.is_relative_to(area):
        raise ValueError(f"key 'workdir': {workdir} lies outside the scratch area {area}; refused, nothing was touched")
    return resolved


def add_job(results_dir: Path, job_id: str, cell_id: str, config: dict, workdir: Path, source: PlanSource) -> None:
    if not JOB_ID.fullmatch(job_id):
        raise ValueError(f"{job_id!r} is not a Slurm job id")
    entries = read_entries(results_dir)
    here = Path(results_dir).resolve()
    entries[job_id] = {
        "cell_id": cell_id,
        "config": config,
        "workdir": Path(workdir).resolve().relative_to(here).as_posix(),
        "results_dir": str(here),
        "submitted_at": time.time(),
        "plan": source.to_dict(),
    }
    write_atomic(ledger_path(results_dir), json.dumps(entries, indent=1))


def remove_job(results_dir: Path, job_id: str) -> None:
    entries = read_entries(results_dir)
    if entries.pop(job_id, None) is None:
        return
    if entries:
        write_atomic(ledger_path(results_dir), json.dumps(entries, indent=1))
    else:
        remove(ledger_path(results_dir), results_dir)
