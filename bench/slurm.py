"""Run one cell as a Slurm job: sbatch a script whose srun starts one torchrun on every node.

The job writes its rank files, heartbeat and log into the cell's workdir, which must therefore be
on a filesystem that this machine and every node of the job see (NFS, Lustre, GPFS, a home folder).
The same timeouts, classification and record as a local cell apply; the record adds the job id.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from bench.config import Cell
from bench.launch import Launch, worker_env
from bench.records import LOG_SCAN_CHARS, build_record, classify, log_tail, read_ranks

POLL_S = 1.0
COMMAND_TIMEOUT_S = 60.0
CANCEL_WAIT_S = 120.0
FINISHED = frozenset(
    {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
)
"""Job states that end a job; every other state (PENDING, RUNNING, COMPLETING, ...) is still in the queue."""
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


def slurm_command(*argv: str) -> subprocess.CompletedProcess:
    """Run a Slurm client command; a hung slurmctld costs at most COMMAND_TIMEOUT_S."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)


def job_script(cell: Cell, cell_json: Path, workdir: Path) -> str:
    """The batch script: srun starts one torchrun per node, joined by c10d on the first node."""
    gpus = [f"--gpus-per-node={cell.launched_ranks_per_node}"] if cell.device == "cuda" else []
    srun = ["srun", f"--nodes={cell.launched_nodes}", "--ntasks-per-node=1", *gpus, "--kill-on-bad-exit=1"]
    torchrun = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(cell.launched_nodes), "--nproc-per-node", str(cell.launched_ranks_per_node), "--monitor-interval", "0.1",
        "--rdzv-backend", "c10d",
    ]  # fmt: skip
    worker = ["-m", "bench.rank.worker", "--cell", str(cell_json), "--out", str(workdir)]
    return "\n".join([
        "#!/bin/bash",
        f"# pfcbench cell {cell.cell_id}: one torchrun per node, {cell.launched_ranks_per_node} ranks each.",
        "set -eu",
        'head_node=$(hostname)  # the batch script runs on the first node',
        "port=$((20000 + SLURM_JOB_ID % 20000))",
        f"exec {shlex.join(srun)} --cpus-per-task=$SLURM_CPUS_ON_NODE \\",
        f'    {shlex.join(torchrun)} --rdzv-endpoint "$head_node:$port" --rdzv-id "$SLURM_JOB_ID" \\',
        f"    {shlex.join(worker)}",
        "",
    ])  # fmt: skip


def sbatch_argv(cell: Cell, workdir: Path, options: SlurmOptions) -> list[str]:
    """sbatch's command line: one task per node; the job's output is the cell's torchrun.log."""
    if cell.device == "cuda":
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
        f"--output={str(workdir / 'torchrun.log').replace('%', '%%')}", "--export=ALL", "--no-requeue",
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
    return done.stdout.strip().split(";")[0]


def job_state(job_id: str) -> JobState | None:
    """The job's state from scontrol, or None once Slurm has forgotten it (MinJobAge after its end)."""
    try:
        done = slurm_command("scontrol", "show", "job", "-o", job_id)
    except subprocess.TimeoutExpired:
        return JobState("UNKNOWN", "scontrol timed out", "", "")
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return None
        return JobState("UNKNOWN", done.stderr.strip(), "", "")
    fields = dict(re.findall(r"\b(JobState|Reason|ExitCode|TimeLimit)=(\S*)", done.stdout))
    return JobState(fields.get("JobState", "UNKNOWN"), fields.get("Reason", ""), fields.get("ExitCode", ""), fields.get("TimeLimit", ""))  # fmt: skip


def cancel(job_id: str) -> JobState | None:
    """scancel the job and wait until it has left the queue (Slurm's KillWait, at most CANCEL_WAIT_S)."""
    slurm_command("scancel", job_id)
    deadline = time.monotonic() + CANCEL_WAIT_S
    state = job_state(job_id)
    while state is not None and state.name not in FINISHED and time.monotonic() < deadline:
        time.sleep(POLL_S / 4)
        state = job_state(job_id)
    return state


def wait_job(job_id: str, workdir: Path, launch: Launch) -> tuple[JobState | None, str | None, float]:
    """Poll the job until it ends; return (last state, our timeout reason or None, when it started running).

    The wall-clock and inactivity clocks start when the job leaves the queue: waiting is not the
    cell's fault. At either limit the job is cancelled.
    """
    watchdog = launch.watchdog(workdir)
    while True:
        state = job_state(job_id)
        if state is None or state.name in FINISHED:
            return state, None, watchdog.started
        if state.name == "PENDING":
            watchdog.restart()
        else:
            reason = watchdog.expired()
            if reason:
                return cancel(job_id), reason, watchdog.started
        time.sleep(POLL_S)


def ending(job_id: str, state: JobState | None, workdir: Path) -> tuple[int | None, str | None, str]:
    """(exit code, Slurm's time-limit reason or None, error text) of a job that has ended."""
    if state is None:
        return None, None, f"Slurm forgot job {job_id} before its end was seen: {log_tail(workdir)}"
    code, _, sig = state.exit_code.partition(":")
    returncode = int(code) if code.isdigit() and sig in ("", "0") else None
    if state.name in OUT_OF_TIME:
        return returncode, f"Slurm ended job {job_id} at its time limit ({state.time_limit})", ""
    text = f"Slurm job {job_id} {state.name} (reason {state.reason}, exit code {state.exit_code}): {log_tail(workdir)}"
    return returncode, None, text


def run_cell_slurm(cell: Cell, workdir: Path, launch: Launch, options: SlurmOptions) -> dict:
    """Run one cell as a Slurm job from workdir (empty or absent, on a shared filesystem); return its record.

    Ctrl-C or SIGTERM while the job is queued or running cancels it and waits until it has left
    the queue before the interrupt goes on.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cell_json = workdir / "cell.json"
    cell_json.write_text(json.dumps(cell.to_dict()))
    (workdir / "job.sh").write_text(job_script(cell, cell_json, workdir))
    started = time.time()
    job_id = None
    try:
        with signals_deferred():
            job_id = submit(sbatch_argv(cell, workdir, options), job_env(cell, launch))
        state, timeout, started = wait_job(job_id, workdir, launch)
    except SlurmError as exc:
        note(workdir, f"pfcbench: sbatch refused the cell: {exc}")
        duration_s = time.time() - started
        return build_record(
            cell, [], "error", error=str(exc), started=started, duration_s=duration_s,
            slurm_job_id=None, slurm_state=None,
        )  # fmt: skip
    except BaseException:
        if job_id is not None:
            cancel(job_id)
        raise
    returncode, out_of_time, error = ending(job_id, state, workdir)
    timeout = timeout or out_of_time
    ranks = read_ranks(workdir)
    status = classify(ranks, cell.launched_ranks, returncode, timeout, log_tail(workdir, LOG_SCAN_CHARS))
    note(workdir, f"pfcbench: Slurm job {job_id} ended {state.name if state else 'unseen'}: {timeout or status}")
    clean = returncode == 0 and not timeout and status == "ok"
    return build_record(
        cell, ranks, status, error=None if clean else timeout or error, started=started,
        duration_s=time.time() - started, slurm_job_id=job_id, slurm_state=state.name if state else None,
    )  # fmt: skip


def note(workdir: Path, line: str) -> None:
    """Append a line to the cell's log, which the runner keeps for a cell that did not finish ok."""
    with open(workdir / "torchrun.log", "a") as log:
        log.write(line + "\n")
