"""Run one cell as a torchrun job on this node: start it, watch it, and leave no process behind."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import site
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from bench.config import Cell
from bench.launch.base import (
    Ended,
    Job,
    Launcher,
    LaunchError,
    LaunchOptions,
    finish_record,
    fresh_workdir,
    keep_log,
    worker_argv,
)
from bench.launch.watchdog import Limits
from bench.rank.host import usable_cpus
from bench.rank.lifetime import die_with_parent
from bench.rank.oom import oom_line
from bench.store.records import LOG_SCAN_CHARS, holds_rank0, log_tail
from bench.units import MIB

if TYPE_CHECKING:
    from bench.matrix import Matrix

KILL_GRACE_S = 5.0


@dataclass(frozen=True, kw_only=True)
class Rendezvous:
    """Where the torchrun agents of a cell of several nodes meet (c10d), one per node."""

    endpoint: str
    """HOST:PORT of the c10d rendezvous."""
    id: str = "pfcbench"
    """Rendezvous id shared by the nodes of one cell: its cell id."""

    def __post_init__(self) -> None:
        host, _, port = self.endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"rendezvous endpoint {self.endpoint!r}: expected HOST:PORT, e.g. node1:29400")
        if not self.id:
            raise ValueError("rdzv_id must not be empty")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_argv(
    cell: Cell, limits: Limits, cell_json: Path, out: Path, rendezvous: Rendezvous | None = None
) -> list[str]:
    """The torchrun command line of a cell: one process per GPU (or CPU rank) on this node.

    A cell of several nodes meets its other nodes at the rendezvous; a cell of one node needs none.
    """
    if cell.launched_nodes > 1:
        if rendezvous is None:
            raise ValueError(f"a cell of {cell.nnodes} nodes needs a rendezvous endpoint (--rdzv-endpoint HOST:PORT)")
        meet = ["--rdzv-backend", "c10d", "--rdzv-endpoint", rendezvous.endpoint, "--rdzv-id", rendezvous.id]
    else:
        meet = ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(cell.launched_nodes),
        "--nproc-per-node", str(cell.launched_ranks_per_node),
        "--monitor-interval", "0.1",
        *meet,
        *worker_argv(cell_json, out, limits),
    ]  # fmt: skip


def worker_env(cell: Cell) -> dict[str, str]:
    """The ranks' environment: this one, plus CPU threading and the import path."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(same_bench_path(env.get("PYTHONPATH")))
    if not cell.on_gpu:
        env.update(cpu_rank_env(cell.launched_ranks_per_node, capped=cell.max_memory_gib is not None))
    return env


def cpu_rank_env(ranks_per_node: int, capped: bool) -> dict[str, str]:
    """What a CPU rank's environment sets: its share of the usable CPUs, and few malloc arenas (glibc reserves
    64 MiB of address space per thread arena, which a CPU memory cap would count)."""
    env = {"MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": str(max(1, usable_cpus() // ranks_per_node))}
    if capped:
        # A fixed threshold maps every tensor of 1 MiB or more apart and unmaps it when freed, so the
        # address space a cap counts is the live tensors, the same from step to step and run to run.
        env["MALLOC_MMAP_THRESHOLD_"] = str(MIB)
    return env


PACKAGE_ROOT = Path(__file__).resolve().parents[2]
"""The folder holding the bench package this process imported."""


def same_bench_path(pythonpath: str | None) -> dict[str, str]:
    """PYTHONSAFEPATH and PYTHONPATH under which the ranks import the bench package this process imported.

    torchrun starts each rank as `python -m bench.rank.worker`, which would put the working directory
    first on sys.path: run from a clone, the ranks would import the clone's bench, not the installed
    one. PYTHONSAFEPATH keeps the working directory off it; a package found outside site-packages (an
    editable install, PYTHONPATH, a source tree) goes first on PYTHONPATH.
    """
    entries = [entry for entry in (pythonpath or "").split(os.pathsep) if entry]
    installed = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if PACKAGE_ROOT not in installed:
        entries = [str(PACKAGE_ROOT), *(entry for entry in entries if Path(entry).resolve() != PACKAGE_ROOT)]
    return {"PYTHONSAFEPATH": "1", **({"PYTHONPATH": os.pathsep.join(entries)} if entries else {})}


def visible_gpus() -> int:
    """The CUDA devices a rank started here would see (CUDA_VISIBLE_DEVICES and MIG applied).

    Counted by torch in a child process, so that the runner itself never loads torch or CUDA.
    """
    probe = "import torch; print(torch.cuda.device_count())"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=False)
    lines = done.stdout.split()
    return int(lines[-1]) if done.returncode == 0 and lines and lines[-1].isdigit() else 0


def gpu_shortage(cells: list[Cell], num_gpus: int, matrix: Matrix | None = None) -> str | None:
    """Why some CUDA cells cannot run on a node with num_gpus visible GPUs, and what to give instead; None if all fit.

    The advice is in the options of the command: a matrix's (run, which names the matrix's sections
    that need no GPU) or a cell's (cell, search; matrix None). A matrix is never advised onto the
    CPU: a matrix made for GPUs (r50 on 618K classes over 8 ranks) would run for hours there, or not at all.
    """
    short = [cell for cell in cells if cell.on_gpu and cell.launched_ranks_per_node > num_gpus]
    if not short:
        return None
    need = max(cell.launched_ranks_per_node for cell in short)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    shown = f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "CUDA_VISIBLE_DEVICES unset"
    if matrix is not None:
        from bench.plan.table import cpu_sections_hint

        fix = (
            f"give --emulate-ranks {need} (rank 0 of each cell alone on one GPU) or --nproc {num_gpus} or fewer"
            if num_gpus
            else "run it on a GPU machine (pfcbench plan predicts each cell's memory without one)"
        )
        hint = cpu_sections_hint(matrix)
    else:
        fix = (
            f"give --emulated (rank 0 of the cell alone on one GPU) or --nproc {num_gpus} or fewer"
            if num_gpus
            else "run it on a GPU machine, or give --device cpu to run it on the CPU"
        )
        hint = ""
    return (
        f"{len(short)} CUDA cell(s) need {need} GPUs per node but {num_gpus} are visible here ({shown}); "
        f"{fix}; nothing was run{hint}"
    )


def kill_tree(pid: int) -> None:
    """SIGTERM torchrun and every process under it, then SIGKILL whatever is left after a grace period.

    torchrun starts each rank in a session of its own, so a process-group kill would miss a rank
    that hangs before it has asked to die with its parent; the tree is listed while it is whole.
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=KILL_GRACE_S)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=KILL_GRACE_S)


class LocalLauncher(Launcher[subprocess.Popen]):
    """torchrun on this machine, one cell at a time: cells on one machine would share its GPUs and cores."""

    name = "local"

    def __init__(self, limits: Limits, rdzv_endpoint: str | None = None) -> None:
        """rdzv_endpoint: where the nodes of a cell of several nodes meet; None runs cells of one node only."""
        self.limits = limits
        self.rendezvous = Rendezvous(endpoint=rdzv_endpoint) if rdzv_endpoint is not None else None

    @classmethod
    def from_options(cls, limits: Limits, options: LaunchOptions) -> LocalLauncher:
        slurm = (options.partition, options.account, options.slurm_time, options.cpus_per_gpu, options.max_jobs)
        if slurm != (None,) * 5 or options.sbatch_args or options.detach:
            raise LaunchError(
                "--partition, --account, --slurm-time, --sbatch-arg, --cpus-per-gpu, --max-jobs and --detach "
                "need --launcher slurm (a local run is one cell at a time)"
            )
        try:
            return cls(limits, options.rdzv_endpoint)
        except ValueError as exc:
            raise LaunchError(str(exc)) from None

    def check(self, cells: list[Cell], matrix: Matrix | None = None) -> None:
        """Cells of several nodes need a rendezvous, CUDA cells the GPUs visible here, record cells their data."""
        nodes = max((cell.launched_nodes for cell in cells), default=1)
        if nodes > 1 and self.rendezvous is None:
            several = "cells of several nodes need" if matrix is not None else f"a cell of {nodes} nodes needs"
            raise LaunchError(f"{several} --rdzv-endpoint HOST:PORT")
        if any(cell.on_gpu for cell in cells) and (shortage := gpu_shortage(cells, visible_gpus(), matrix)):
            raise LaunchError(shortage)
        super().check(cells, matrix)

    def submit(self, cell: Cell, results_dir: Path) -> Job[subprocess.Popen]:
        """Start the cell's torchrun from a fresh scratch folder of this node."""
        return self.start(cell, fresh_workdir(cell, results_dir))

    def start(self, cell: Cell, workdir: Path) -> Job[subprocess.Popen]:
        """Start the cell's torchrun in its own process group, from workdir."""
        rendezvous = dataclasses.replace(self.rendezvous, id=cell.cell_id) if self.rendezvous else None
        workdir.mkdir(parents=True, exist_ok=True)
        cell_json = workdir / "cell.json"
        cell_json.write_text(json.dumps(cell.to_dict()))
        argv = torchrun_argv(cell, self.limits, cell_json, workdir, rendezvous)
        with open(workdir / "torchrun.log", "wb") as log_file:
            proc = subprocess.Popen(
                argv, stdout=log_file, stderr=subprocess.STDOUT, env=worker_env(cell), start_new_session=True,
                preexec_fn=die_with_parent,
            )  # fmt: skip
        return Job(cell=cell, workdir=workdir, watchdog=self.limits.watchdog(workdir), handle=proc)

    def poll(self, job: Job[subprocess.Popen]) -> Ended | None:
        proc = job.handle
        timeout = None if proc.poll() is not None else job.watchdog.expired()
        if proc.returncode is None and timeout is None:
            return None
        self.cancel(job, job.workdir)  # whatever ended, no process of its tree is left
        returncode = None if timeout else proc.returncode
        log = log_tail(job.workdir, LOG_SCAN_CHARS)
        return Ended(returncode, timeout, f"torchrun exited with {returncode}: {oom_line(log) or log[-2000:]}", {})

    def cancel(self, job: Job[subprocess.Popen], results_dir: Path) -> None:
        kill_tree(job.handle.pid)
        job.handle.wait()

    def collect(self, job: Job[subprocess.Popen], ended: Ended, results_dir: Path) -> tuple[dict, bool]:
        return keep_log(finish_record(job, ended), job.workdir, results_dir), holds_rank0(job.cell, job.workdir)

    def run_cell(self, cell: Cell, workdir: Path) -> tuple[dict, bool]:
        """Run one cell in workdir (which must be empty or absent): its record, and whether this node holds rank 0.

        The sweep's loop runs it, as a sweep of one cell whose folder stays: whatever happens,
        KeyboardInterrupt included, no process of its torchrun is left.
        """
        from bench.launch.runner import run_jobs

        [(_, (record, here))] = run_jobs(InFolder(self, workdir), workdir, [cell], lambda _, *record_here: record_here)
        return record, here


class InFolder(LocalLauncher):
    """A local launcher that runs its one cell in a folder of the caller's: the rank files and the log stay
    there, and the record is returned, not kept."""

    def __init__(self, launcher: LocalLauncher, workdir: Path) -> None:
        self.limits, self.rendezvous, self.workdir = launcher.limits, launcher.rendezvous, workdir

    def submit(self, cell: Cell, results_dir: Path) -> Job[subprocess.Popen]:
        return self.start(cell, self.workdir)

    def collect(self, job: Job[subprocess.Popen], ended: Ended, results_dir: Path) -> tuple[dict, bool]:
        return finish_record(job, ended), holds_rank0(job.cell, job.workdir)

    def release(self, job: Job[subprocess.Popen], results_dir: Path) -> None:
        return None
