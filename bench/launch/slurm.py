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
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from bench.config import Cell
from bench.launch.base import Ended, Job, Launcher, finish_record, keep_log, worker_argv
from bench.launch.ledger import JOB_ID, add_job, read_ledger, remove_job, scratch_area
from bench.launch.local import Launch, worker_env
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
TIME_LIMIT = re.compile(r"(?i)(\d+-)?\d+(:\d+){0,2}|infinite|unlimited")
NAME = re.compile(r"[\w.,:@+-]+")
"""A partition or account name (or a comma list of them): nothing a shell or sbatch would read as more."""
SBATCH_ARG = re.compile(r"--?[A-Za-z][\w-]*(=[\w.,:@+=/%-]*)?")
"""One sbatch option, --name or --name=value or -x; never a bare word, which sbatch takes as its script."""


class SlurmError(RuntimeError):
    """Slurm refused a command; the text is Slurm's own message."""


@dataclass(frozen=True, kw_only=True)
class SlurmOptions:
    """Where, and under which limits, Slurm runs the cells of a sweep."""

    partition: str | None = None
    """Partition to submit to (--partition); None is the cluster's default."""
    account: str | None = None
    """Account charged for the jobs (--account); None is the user's default."""
    time_limit: str | int | None = None
    """Slurm's limit on one cell (--time): minutes, or a Slurm time such as 1:30:00; None is the partition's."""
    sbatch_args: tuple[str, ...] = ()
    """Further sbatch options, each one argument: ("--qos=high", "--exclusive")."""
    cpus_per_gpu: int = 4
    """CPU cores a CUDA cell's job asks for per GPU (its ranks' data and launch threads)."""

    def __post_init__(self) -> None:
        for option, value in (("--partition", self.partition), ("--account", self.account)):
            if value is not None and not NAME.fullmatch(value):
                raise ValueError(f"{option} {value!r}: expected a Slurm name (letters, digits, _ . - , : @ +)")
        for arg in self.sbatch_args:
            if not SBATCH_ARG.fullmatch(arg):
                raise ValueError(
                    f"--sbatch-arg {arg!r}: expected one sbatch option such as --qos=high or --exclusive "
                    "(no spaces, quotes or shell characters; a bare word would be taken as the job script)"
                )
        if self.cpus_per_gpu < 1:
            raise ValueError(f"--cpus-per-gpu must be at least 1, not {self.cpus_per_gpu}")
        if self.time_limit is not None and not TIME_LIMIT.fullmatch(str(self.time_limit)):
            raise ValueError(
                f"Slurm time limit {self.time_limit!r}: give minutes (30) or [days-]hours:minutes:seconds (1:30:00)"
            )


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


def job_script(cell: Cell, cell_json: Path, workdir: Path, inactivity_timeout_s: float) -> str:
    """The batch script: srun starts one torchrun per node, joined by c10d on the first node."""
    gpus = [f"--gpus-per-node={cell.launched_ranks_per_node}"] if cell.on_gpu else []
    srun = ["srun", f"--nodes={cell.launched_nodes}", "--ntasks-per-node=1", *gpus, "--kill-on-bad-exit=1"]
    torchrun = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(cell.launched_nodes), "--nproc-per-node", str(cell.launched_ranks_per_node), "--monitor-interval", "0.1",
        "--rdzv-backend", "c10d",
    ]  # fmt: skip
    worker = worker_argv(cell_json, workdir, inactivity_timeout_s)
    return "\n".join([
        "#!/bin/bash",
        f"# pfcbench cell {cell.cell_id}: one torchrun per node, {cell.launched_ranks_per_node} ranks each.",
        "set -eu",
        "# A requeued job (preempted, scontrol requeue) starts over: nothing of an earlier run may be recorded.",
        f"rm -f {shlex.quote(str(workdir))}/rank-*.json {shlex.quote(str(workdir))}/heartbeat",
        'head_node=$(hostname)  # the batch script runs on the first node',
        "port=$((20000 + SLURM_JOB_ID % 20000))",
        f"exec {shlex.join(srun)} --cpus-per-task=$SLURM_CPUS_ON_NODE \\",
        f'    {shlex.join(torchrun)} --rdzv-endpoint "$head_node:$port" --rdzv-id "$SLURM_JOB_ID" \\',
        f"    {shlex.join(worker)}",
        "",
    ])  # fmt: skip


def sbatch_argv(cell: Cell, workdir: Path, options: SlurmOptions) -> list[str]:
    """sbatch's command line: one task per node; the job's output is the cell's torchrun.log."""
    if cell.on_gpu:
        resources = [
            f"--gpus-per-node={cell.launched_ranks_per_node}",
            f"--cpus-per-task={cell.launched_ranks_per_node * options.cpus_per_gpu}",
        ]
    else:
        resources = [f"--cpus-per-task={cell.launched_ranks_per_node}"]
    optional = {"--partition": options.partition, "--account": options.account, "--time": options.time_limit}
    return [
        "sbatch", "--parsable", f"--job-name=pfcbench-{cell.cell_id}",
        f"--nodes={cell.launched_nodes}", "--ntasks-per-node=1", *resources,
        f"--output={str(workdir / 'torchrun.log').replace('%', '%%')}", "--export=ALL", "--requeue",
        *(f"{flag}={value}" for flag, value in optional.items() if value is not None),
        *options.sbatch_args,
        str(workdir / "job.sh"),
    ]  # fmt: skip


def job_env(cell: Cell, launch: Launch) -> dict[str, str]:
    """The workers' environment, less the SLURM_* variables of a job this runner itself runs in (SLURM_CONF stays)."""
    env = worker_env(cell, launch)
    inherited = [k for k in env if k.startswith("SLURM_") and k != "SLURM_CONF"]
    for key in inherited:
        del env[key]
    return env


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while sbatch runs, so that a job is never submitted unseen."""
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def submit(argv: list[str], env: dict[str, str]) -> str:
    """Submit the job and return its id; SlurmError carries sbatch's message when it refuses."""
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


def cancel(job_id: str) -> JobState | None:
    """scancel the job and wait until it has left the queue (Slurm's KillWait, at most CANCEL_WAIT_S)."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        slurm_command("scancel", job_id)
    deadline = time.monotonic() + CANCEL_WAIT_S
    state = job_state(job_id)
    while state is not None and state.name not in FINISHED and time.monotonic() < deadline:
        time.sleep(SLURM_POLL_S / 4)
        state = job_state(job_id)
    return state


class SlurmLauncher(Launcher):
    """Each cell a Slurm job of its own, up to max_jobs in flight at once; pfcbench holds the throttle.

    Separate jobs rather than one job array: the cells of one matrix ask for different resources
    (nodes, ranks per node, CPUs), an array would need one per shape and still tie every task of it to
    one set of sbatch options; a job per cell maps one job id to one cell in the ledger, so that each
    can be adopted, cancelled or submitted again alone, and its end recorded the moment Slurm reports it.
    The cost is one sbatch per cell, which a sweep of hundreds of cells of minutes each does not notice.
    """

    poll_s = SLURM_POLL_S
    queues = True

    def __init__(
        self, launch: Launch, options: SlurmOptions, max_jobs: int = 1, source: PlanSource | None = None
    ) -> None:
        """source: what the run's plan was built from, which the ledger keeps beside each job it submits."""
        if max_jobs < 1:
            raise ValueError(f"--max-jobs must be at least 1, not {max_jobs}")
        self.launch, self.options, self.slots = launch, options, max_jobs
        self.source = source or PlanSource()

    def adopt(self, results_dir: Path, cells: list[Cell]) -> list[Job]:
        by_id = {cell.cell_id: cell for cell in cells}
        jobs = []
        for job_id, entry in read_ledger(results_dir).items():  # each scratch folder checked inside the scratch area
            if entry.cell.cell_id in by_id:
                watchdog = self.launch.watchdog(entry.workdir)
                cell = by_id.pop(entry.cell.cell_id)
                jobs.append(Job(cell=cell, workdir=entry.workdir, watchdog=watchdog, handle=job_id))
        return jobs

    def submit(self, cell: Cell, results_dir: Path) -> Job:
        """sbatch the cell from a fresh scratch folder; the ledger names the job before anyone waits on it."""
        workdir = results_dir / "work" / f"{cell.cell_id}.{socket.gethostname()}"
        remove(workdir, scratch_area(results_dir))
        workdir.mkdir(parents=True)
        cell_json = workdir / "cell.json"
        cell_json.write_text(json.dumps(cell.to_dict()))
        (workdir / "job.sh").write_text(job_script(cell, cell_json, workdir, self.launch.inactivity_timeout_s))
        job = Job(cell=cell, workdir=workdir, watchdog=self.launch.watchdog(workdir))
        try:
            with signals_deferred():
                job.handle = submit(sbatch_argv(cell, workdir, self.options), job_env(cell, self.launch))
                add_job(results_dir, job.handle, cell.cell_id, cell.to_dict(), workdir, self.source)
        except SlurmError as exc:
            job.handle = exc
            note(workdir, f"pfcbench: sbatch refused the cell: {exc}")
        return job

    def poll(self, job: Job) -> Ended | None:
        """The job's end, or None while it is queued or running; its clocks start when it leaves the queue."""
        if isinstance(job.handle, SlurmError):
            return Ended(None, None, str(job.handle), {"slurm_job_id": None, "slurm_state": None})
        state = job_state(job.handle)
        if state is None or state.name in FINISHED:
            return self.ending(job, state)
        if state.name != UNKNOWN:  # scontrol failed: the job stays as it was last seen
            job.running = state.name not in QUEUED
        if not job.running:
            job.watchdog.restart()
        job.started = job.watchdog.started
        timeout = job.running and job.watchdog.expired()
        return self.ending(job, cancel(job.handle), timeout) if timeout else None

    def ending(self, job: Job, state: JobState | None, timeout: str | None = None) -> Ended:
        """How the job ended; a job Slurm forgot that left no rank file is lost, and runs again."""
        job_id, workdir = job.handle, job.workdir
        fields = {"slurm_job_id": job_id, "slurm_state": state.name if state else None}
        if state is None:
            error = f"Slurm forgot job {job_id} before its end was seen: {log_tail(workdir)}"
            return Ended(None, None, error, fields, lost=not rank_files_left(workdir))
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

    def cancel(self, job: Job, results_dir: Path) -> None:
        if isinstance(job.handle, str):
            cancel(job.handle)
            remove_job(results_dir, job.handle)

    def collect(self, job: Job, ended: Ended, results_dir: Path) -> tuple[dict, bool]:
        record = finish_record(job, ended)
        if record["status"] == "ok":
            describe_compute_nodes(results_dir, job.workdir, record)
        return keep_log(record, job.workdir, results_dir), True

    def release(self, job: Job, results_dir: Path) -> None:
        if isinstance(job.handle, str):
            remove_job(results_dir, job.handle)
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
