"""Run one cell as a Slurm job: sbatch a script whose srun starts one torchrun on every node.

The job writes its rank files, heartbeat and log into the cell's workdir, which must therefore be
on a filesystem that this machine and every node of the job see (NFS, Lustre, GPFS, a home folder).
The same timeouts, classification and record as a local cell apply; the record adds the job id.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from bench.config import Cell
from bench.launch.base import (
    Ended,
    Job,
    Launcher,
    LaunchError,
    LauncherUnavailable,
    LaunchOptions,
    finish_record,
    fresh_workdir,
    keep_log,
)
from bench.launch.ledger import JOB_ID, add_job, read_ledger, remove_job, scratch_area
from bench.launch.slurm_job import SlurmOptions, job_env, job_script, sbatch_argv
from bench.launch.watchdog import Limits
from bench.plan.build import PlanSource
from bench.store.files import remove
from bench.store.records import log_tail, rank_files_left
from bench.store.results import save_env

SLURM_POLL_S = 1.0
COMMAND_TIMEOUT_S = 60.0
CANCEL_WAIT_S = 120.0
FINISHED = frozenset(
    {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
)
"""Job states that end a job; every other state (PENDING, RUNNING, COMPLETING, ...) is still in the queue."""
QUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED"})
"""States of a job not (or no longer) running: its clocks wait."""
UNKNOWN = "UNKNOWN"
"""The state of a job that Slurm could not be asked about (scontrol failed): neither running nor ended nor lost."""
OUT_OF_TIME = frozenset({"TIMEOUT", "DEADLINE"})


class SlurmError(RuntimeError):
    """Slurm refused a command; the text is Slurm's own message."""


class JobState(NamedTuple):
    """What scontrol says of a job."""

    name: str
    reason: str
    exit_code: str
    time_limit: str
    nodes: str = ""
    """The job's nodes (NodeList), which name the node of a NODE_FAIL."""


def slurm_command(*argv: str) -> subprocess.CompletedProcess:
    """Run a Slurm client command; a hung slurmctld costs at most COMMAND_TIMEOUT_S.

    Its last argument is a job id, checked to be one (digits, or digits_digits) so that Slurm never reads it as an option.
    """
    if not JOB_ID.fullmatch(argv[-1]):
        raise ValueError(f"{argv[-1]!r} is not a Slurm job id")
    return subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while sbatch runs, so that a job is never submitted unseen."""
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def sbatch(argv: list[str], env: dict[str, str]) -> str:
    """Submit the job with sbatch and return its id; SlurmError carries sbatch's message when it refuses."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"sbatch could not run: {exc}") from None
    if done.returncode != 0:
        raise SlurmError(done.stderr.strip() or f"sbatch exited with {done.returncode}")
    job_id = done.stdout.strip().split(";")[0]
    if not JOB_ID.fullmatch(job_id):
        raise SlurmError(f"sbatch answered {done.stdout.strip()!r}, not a job id")
    return job_id


def job_state(job_id: str) -> JobState | None:
    """The job's state from scontrol, or None once Slurm has forgotten it (MinJobAge after its end).

    When scontrol itself fails (no controller, not installed) the state is UNKNOWN and its reason says why.
    """
    try:
        done = slurm_command("scontrol", "show", "job", "-o", job_id)
    except subprocess.TimeoutExpired:
        return JobState(UNKNOWN, "scontrol timed out", "", "")
    except OSError as exc:
        return JobState(UNKNOWN, f"scontrol could not run: {exc.strerror}", "", "")
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return None
        return JobState(UNKNOWN, " ".join(done.stderr.split()) or f"scontrol exited with {done.returncode}", "", "")
    fields = dict(re.findall(r"\b(JobState|Reason|ExitCode|TimeLimit|NodeList)=(\S*)", done.stdout))
    return JobState(
        fields.get("JobState", "UNKNOWN"), fields.get("Reason", ""), fields.get("ExitCode", ""),
        fields.get("TimeLimit", ""), "" if fields.get("NodeList") == "(null)" else fields.get("NodeList", ""),
    )  # fmt: skip


def scancel(job_id: str) -> JobState | None:
    """scancel the job and wait until it has left the queue (Slurm's KillWait, at most CANCEL_WAIT_S)."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        slurm_command("scancel", job_id)
    deadline = time.monotonic() + CANCEL_WAIT_S
    state = job_state(job_id)
    while state is not None and state.name not in FINISHED and time.monotonic() < deadline:
        time.sleep(SLURM_POLL_S / 4)
        state = job_state(job_id)
    return state


def progress(state: JobState | None, workdir: Path) -> str:
    """What a job's state means to a sweep, the one rule the runner and pfcbench status share: queued,
    running, done (ended, to be recorded), lost (Slurm forgot it and it left no rank file: it runs
    again) or unknown (Slurm could not be asked: the job stays as it was last seen)."""
    if state is None:
        return "done" if rank_files_left(workdir) else "lost"
    if state.name in FINISHED:
        return "done"
    if state.name == UNKNOWN:
        return "unknown"
    return "queued" if state.name in QUEUED else "running"


def job_word(job_id: str, workdir: Path) -> str:
    """The job's progress as pfcbench status says it; unknown with Slurm's message when Slurm could not be asked."""
    state = job_state(job_id)
    word = progress(state, workdir)
    return f"unknown ({state.reason})" if word == "unknown" and state.reason else word


@dataclass(frozen=True)
class Submitted:
    """A cell's Slurm job: its id, or why sbatch refused it (then it never ran, and ends at its first poll)."""

    job_id: str | None
    refused: str | None = None


class SlurmLauncher(Launcher[Submitted]):
    """Each cell a Slurm job of its own, up to max_jobs in flight at once; pfcbench holds the throttle.

    Separate jobs rather than one job array: the cells of one matrix ask for different resources
    (nodes, ranks per node, CPUs), an array would need one per shape and still tie every task of it to
    one set of sbatch options; a job per cell maps one job id to one cell in the ledger, so that each
    can be adopted, cancelled or submitted again alone, and its end recorded the moment Slurm reports it.
    The cost is one sbatch per cell, which a sweep of hundreds of cells of minutes each does not notice.
    """

    name = "slurm"
    poll_s = SLURM_POLL_S
    queues = True
    adopts = True

    def __init__(
        self, limits: Limits, options: SlurmOptions | None = None, max_jobs: int = 1, source: PlanSource | None = None
    ) -> None:
        """source: what the run's plan was built from, which the ledger keeps beside each job it submits."""
        if max_jobs < 1:
            raise ValueError(f"--max-jobs must be at least 1, not {max_jobs}")
        self.limits, self.options, self.slots = limits, options or SlurmOptions(), max_jobs
        self.source = source or PlanSource()

    @classmethod
    def from_options(cls, limits: Limits, options: LaunchOptions) -> SlurmLauncher:
        """LaunchError for an option sbatch would misread, LauncherUnavailable where sbatch is not on PATH."""
        if options.rdzv_endpoint is not None:
            raise LaunchError("--rdzv-endpoint is for --launcher local: a Slurm job meets on its own first node")
        try:
            slurm = SlurmOptions(
                partition=options.partition, account=options.account, time_limit=options.slurm_time,
                sbatch_args=tuple(options.sbatch_args),
                cpus_per_gpu=SlurmOptions.cpus_per_gpu if options.cpus_per_gpu is None else options.cpus_per_gpu,
            )  # fmt: skip
            launcher = cls(limits, slurm, options.max_jobs or 1)
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
        if shutil.which("sbatch") is None:
            raise LauncherUnavailable(
                "--launcher slurm: sbatch is not on PATH; run from a machine that submits Slurm jobs"
            )
        return launcher

    def for_plan(self, source: PlanSource) -> SlurmLauncher:
        return SlurmLauncher(self.limits, self.options, self.slots, source)

    def adopt(self, results_dir: Path, cells: list[Cell]) -> list[Job[Submitted]]:
        by_id = {cell.cell_id: cell for cell in cells}
        jobs = []
        for job_id, entry in read_ledger(results_dir).items():  # each scratch folder checked inside the scratch area
            if entry.cell.cell_id in by_id:
                watchdog = self.limits.watchdog(entry.workdir)
                cell = by_id.pop(entry.cell.cell_id)
                jobs.append(Job(cell=cell, workdir=entry.workdir, watchdog=watchdog, handle=Submitted(job_id)))
        return jobs

    def submit(self, cell: Cell, results_dir: Path) -> Job[Submitted]:
        """sbatch the cell from a fresh scratch folder; the ledger names the job before anyone waits on it."""
        workdir = fresh_workdir(cell, results_dir)
        workdir.mkdir(parents=True)
        cell_json = workdir / "cell.json"
        cell_json.write_text(json.dumps(cell.to_dict()))
        (workdir / "job.sh").write_text(job_script(cell, cell_json, workdir, self.limits))
        watchdog = self.limits.watchdog(workdir)
        try:
            with signals_deferred():
                job_id = sbatch(sbatch_argv(cell, workdir, self.options), job_env(cell))
                add_job(results_dir, job_id, cell.cell_id, cell.to_dict(), workdir, self.source)
        except SlurmError as exc:
            note(workdir, f"pfcbench: sbatch refused the cell: {exc}")
            return Job(cell=cell, workdir=workdir, watchdog=watchdog, handle=Submitted(None, refused=str(exc)))
        return Job(cell=cell, workdir=workdir, watchdog=watchdog, handle=Submitted(job_id))

    def poll(self, job: Job[Submitted]) -> Ended | None:
        """The job's end, or None while it is queued or running; its clocks start when it leaves the queue."""
        if job.handle.refused is not None:
            return Ended(None, None, job.handle.refused, {"slurm_job_id": None, "slurm_state": None})
        state = job_state(job.handle.job_id)
        word = progress(state, job.workdir)
        if word in ("done", "lost"):
            return self.ending(job, state)
        if word != "unknown":
            job.running = word == "running"
        if not job.running:
            job.watchdog.restart()
        job.started = job.watchdog.started
        timeout = job.running and job.watchdog.expired()
        return self.ending(job, scancel(job.handle.job_id), timeout) if timeout else None

    def ending(self, job: Job[Submitted], state: JobState | None, timeout: str | None = None) -> Ended:
        """How the job ended; a job Slurm forgot that left no rank file is lost, and runs again."""
        job_id, workdir = job.handle.job_id, job.workdir
        fields = {"slurm_job_id": job_id, "slurm_state": state.name if state else None}
        if state is None:
            error = f"Slurm forgot job {job_id} before its end was seen: {log_tail(workdir)}"
            return Ended(None, None, error, fields, lost=progress(state, workdir) == "lost")
        code, _, sig = state.exit_code.partition(":")
        returncode = int(code) if code.isdigit() and sig in ("", "0") else None
        if state.name in OUT_OF_TIME:
            timeout = timeout or f"Slurm ended job {job_id} at its time limit ({state.time_limit})"
        if state.name == "NODE_FAIL":
            fields["slurm_nodes"] = state.nodes
        where = f" on {state.nodes}" if state.nodes else ""
        seen = f"Slurm job {job_id} {state.name}{where} (reason {state.reason}, exit code {state.exit_code})"
        error = f"{seen}: {log_tail(workdir)}"
        note(workdir, f"pfcbench: {seen}: {timeout or 'ended'}")
        return Ended(returncode, timeout, error, fields)

    def cancel(self, job: Job[Submitted], results_dir: Path) -> None:
        if job.handle.job_id is not None:
            scancel(job.handle.job_id)
            remove_job(results_dir, job.handle.job_id)

    def collect(self, job: Job[Submitted], ended: Ended, results_dir: Path) -> tuple[dict, bool]:
        record = finish_record(job, ended)
        if record["status"] == "ok":
            describe_compute_nodes(results_dir, job.workdir, record)
        return keep_log(record, job.workdir, results_dir), True

    def release(self, job: Job[Submitted], results_dir: Path) -> None:
        if job.handle.job_id is not None:
            remove_job(results_dir, job.handle.job_id)
        remove(job.workdir, scratch_area(results_dir))


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


def note(workdir: Path, line: str) -> None:
    """Append a line to the cell's log, which the runner keeps for a cell that did not finish ok.

    A log that is a symlink is not followed: nothing outside the scratch folder is written.
    """
    with contextlib.suppress(OSError):
        fd = os.open(workdir / "torchrun.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "a") as log:
            log.write(line + "\n")
