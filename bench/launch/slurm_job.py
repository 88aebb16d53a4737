"""A cell's Slurm job: the options it is submitted with, its batch script, sbatch's command line and its environment.

The batch script's srun starts one torchrun on every node; the nodes meet (c10d) on the job's first node.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.config import Cell
from bench.launch.base import worker_argv
from bench.launch.local import worker_env
from bench.launch.watchdog import Limits

TIME_LIMIT = re.compile(r"(?i)(\d+-)?\d+(:\d+){0,2}|infinite|unlimited")
NAME = re.compile(r"[\w.,:@+-]+")
"""A partition or account name (or a comma list of them): nothing a shell or sbatch would read as more."""
SBATCH_ARG = re.compile(r"--?[A-Za-z][\w-]*(=[\w.,:@+=/%-]*)?")
"""One sbatch option, --name or --name=value or -x; never a bare word, which sbatch takes as its script."""


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


def job_script(cell: Cell, cell_json: Path, workdir: Path, limits: Limits) -> str:
    """The batch script: srun starts one torchrun per node, joined by c10d on the first node."""
    gpus = [f"--gpus-per-node={cell.launched_ranks_per_node}"] if cell.on_gpu else []
    srun = ["srun", f"--nodes={cell.launched_nodes}", "--ntasks-per-node=1", *gpus, "--kill-on-bad-exit=1"]
    torchrun = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(cell.launched_nodes), "--nproc-per-node", str(cell.launched_ranks_per_node), "--monitor-interval", "0.1",
        "--rdzv-backend", "c10d",
    ]  # fmt: skip
    worker = worker_argv(cell_json, workdir, limits)
    ranks = cell.launched_ranks_per_node
    threads = [] if cell.on_gpu else [
        "# A CPU rank's threads: its share of the CPUs Slurm gave the job on a node, not of the submitting host's.",
        f"export OMP_NUM_THREADS=$(( SLURM_CPUS_ON_NODE > {ranks} ? SLURM_CPUS_ON_NODE / {ranks} : 1 ))",
    ]  # fmt: skip
    return "\n".join([
        "#!/bin/bash",
        f"# pfcbench cell {cell.cell_id}: one torchrun per node, {ranks} ranks each.",
        "set -eu",
        "# A requeued job (preempted, scontrol requeue) starts over: nothing of an earlier run may be recorded.",
        f"rm -f {shlex.quote(str(workdir))}/rank-*.json {shlex.quote(str(workdir))}/heartbeat",
        *threads,
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


def job_env(cell: Cell) -> dict[str, str]:
    """The workers' environment, less the SLURM_* variables of a job this runner itself runs in (SLURM_CONF stays)."""
    env = worker_env(cell)
    inherited = [k for k in env if k.startswith("SLURM_") and k != "SLURM_CONF"]
    for key in inherited:
        del env[key]
    return env
