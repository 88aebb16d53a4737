"""The launcher interface: how the runner starts a cell, watches it, and reads its record.

Two launchers implement it: `bench.launch.local.LocalLauncher` (torchrun on this machine, one slot, as
cells on one machine would share it) and `bench.launch.slurm.SlurmLauncher` (one Slurm job per cell, up to
--max-jobs at once). A command chooses one by name (bench/launch/choose.py); the runner's single loop
(bench/launch/runner.py) fills the slots, polls every job, and records each as it ends, whichever launcher it is.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

from bench.config import Cell
from bench.launch.ledger import scratch_area
from bench.launch.watchdog import Limits, Watchdog
from bench.store.files import remove
from bench.store.records import LOG_SCAN_CHARS, RankFileError, build_record, cell_status, log_tail, read_ranks

if TYPE_CHECKING:
    from bench.matrix import Matrix
    from bench.plan.build import PlanSource

Handle = TypeVar("Handle")
"""What a launcher keeps to find its job again: a process, a Slurm submission."""


class LaunchError(ValueError):
    """Options or cells a launcher cannot run as asked: one line, which the command shows as its usage error."""


class LauncherUnavailable(RuntimeError):
    """The launcher cannot be used from this machine (its scheduler's commands are not here)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LaunchOptions:
    """What a command line says of its launcher, None (or empty) where an option was not given; each
    launcher takes its own and refuses the others'."""

    rdzv_endpoint: str | None = None
    partition: str | None = None
    account: str | None = None
    slurm_time: str | None = None
    sbatch_args: tuple[str, ...] = ()
    cpus_per_gpu: int | None = None
    max_jobs: int | None = None
    detach: bool = False


def worker_argv(cell_json: Path, out: Path, limits: Limits) -> list[str]:
    """What torchrun runs on each rank: the worker module, with everything a rank needs on its command line."""
    return [
        "-m", "bench.rank.worker", "--cell", str(cell_json), "--out", str(out),
        "--pg-timeout-s", str(limits.pg_timeout_s),
    ]  # fmt: skip


def fresh_workdir(cell: Cell, results_dir: Path) -> Path:
    """The cell's scratch folder on this node, emptied: per node, so that the nodes of a cell of several
    nodes may share the results folder."""
    workdir = results_dir / "work" / f"{cell.cell_id}.{socket.gethostname()}"
    remove(workdir, scratch_area(results_dir))
    return workdir


@dataclasses.dataclass(kw_only=True)
class Job(Generic[Handle]):
    """One cell in flight: where it runs from and what the launcher needs to find it again."""

    cell: Cell
    workdir: Path
    started: float = dataclasses.field(default_factory=time.time)
    """When it started running (a Slurm job: when it left the queue)."""
    watchdog: Watchdog | None = None
    handle: Handle | None = None
    """The launcher's own handle, one type per launcher."""
    running: bool = True
    """False while a scheduler still holds the job in its queue."""


class Ended(NamedTuple):
    """How a job ended, as its launcher saw it."""

    returncode: int | None
    timeout: str | None
    """Why the watchdog or the scheduler stopped it for time, or None."""
    error: str
    """What the launcher saw go wrong, used when the ranks say nothing better."""
    fields: dict
    """Launcher fields the record carries as they are (a Slurm job id and state)."""
    lost: bool = False
    """The job vanished with no trace (Slurm forgot it, no rank file): the cell runs again."""


class Launcher(Generic[Handle]):
    """Submit a cell, poll it, cancel it, and turn its end into a record; `slots` jobs at once."""

    name: str
    """The launcher's name, as --launcher gives it."""
    limits: Limits
    slots: int = 1
    poll_s: float = 0.1
    queues: bool = False
    """Whether a scheduler holds submitted jobs in a queue before they run (Slurm); this machine runs them at once."""
    adopts: bool = False
    """Whether it takes over the jobs an earlier run left in flight (the ledger's); if not, they stop a run."""

    @classmethod
    def from_options(cls, limits: Limits, options: LaunchOptions) -> Launcher:
        """The launcher a command line asks for; LaunchError names an option that is not its own."""
        raise NotImplementedError

    def check(self, cells: list[Cell], matrix: Matrix | None = None) -> None:
        """Refuse, before anything runs, cells this launcher cannot run (LaunchError, one line).

        matrix: the matrix the cells come from, whose options the advice names; None for one cell.
        """
        from bench.recfiles.check import data_problem

        if problem := data_problem(cells):
            raise LaunchError(problem)

    def for_plan(self, source: PlanSource) -> Launcher:
        """This launcher, its jobs noted as planned from source where it keeps jobs in flight (the ledger)."""
        return self

    def adopt(self, results_dir: Path, cells: list[Cell]) -> list[Job[Handle]]:
        """The jobs of these cells that an earlier run left in flight; a local run leaves none."""
        return []

    def submit(self, cell: Cell, results_dir: Path) -> Job[Handle]:
        raise NotImplementedError

    def poll(self, job: Job[Handle]) -> Ended | None:
        """How the job ended, or None while it runs (stopping it at its limits)."""
        raise NotImplementedError

    def cancel(self, job: Job[Handle], results_dir: Path) -> None:
        """Stop the job and wait until it is gone; it is no longer in flight."""
        raise NotImplementedError

    def release(self, job: Job[Handle], results_dir: Path) -> None:
        """Forget a job whose record is on disk: its scratch folder goes."""
        remove(job.workdir, scratch_area(results_dir))

    def collect(self, job: Job[Handle], ended: Ended, results_dir: Path) -> tuple[dict, bool]:
        """The job's record, and whether this node records it (of a cell of several nodes, rank 0's node does)."""
        return keep_log(finish_record(job, ended), job.workdir, results_dir), True


def finish_record(job: Job, ended: Ended) -> dict:
    """The record of a job that ended, from its rank files and log, whichever launcher ran it."""
    cell, workdir = job.cell, job.workdir
    try:
        ranks = read_ranks(workdir)
    except RankFileError as exc:
        return build_record(
            cell, [], "error", error=str(exc), started=job.started, duration_s=time.time() - job.started, **ended.fields
        )
    status = cell_status(ranks, cell.launched_ranks, ended.returncode, ended.timeout, log_tail(workdir, LOG_SCAN_CHARS))
    clean = ended.returncode == 0 and not ended.timeout and status == "ok"
    record = build_record(
        cell, ranks, status, error=None if clean else ended.timeout or ended.error, started=job.started,
        duration_s=time.time() - job.started, **ended.fields,
    )  # fmt: skip
    return record


def keep_log(record: dict, workdir: Path, results_dir: Path) -> dict:
    """Keep the torchrun log of a cell that did not finish ok in results_dir/logs; the record points at it."""
    if (record["status"] != "ok" or record.get("teardown_error")) and (workdir / "torchrun.log").exists():
        logs = results_dir / "logs"
        logs.mkdir(exist_ok=True)
        shutil.copyfile(workdir / "torchrun.log", logs / f"{record['cell_id']}.log")
        record["log"] = f"logs/{record['cell_id']}.log"
    return record
