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
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.config import Cell, check_seconds
from bench.launch.base import Ended, Job, Launcher, finish_record, keep_log, worker_argv
from bench.launch.ledger import scratch_area
from bench.launch.watchdog import Watchdog
from bench.rank.lifetime import die_with_parent
from bench.rank.oom import oom_line
from bench.store.files import remove
from bench.store.records import LOG_SCAN_CHARS, holds_rank0, log_tail
from bench.units import MIB

KILL_GRACE_S = 5.0
PROCESS_POLL_S = 0.1


@dataclass(frozen=True, kw_only=True)
class Launch:
    """How cells are started, as opposed to what they compute."""

    timeout_s: float = 1800.0
    """Wall-clock limit of one cell, start-up included."""
    inactivity_timeout_s: float = 300.0
    """Limit on time without a finished step (or, before the first, without any output)."""
    rdzv_endpoint: str | None = None
    """HOST:PORT of the c10d rendezvous for cells of several nodes; None runs on this machine alone."""
    rdzv_id: str = "pfcbench"
    """Rendezvous id shared by the nodes of one cell."""

    def __post_init__(self) -> None:
        check_seconds("timeout_s", self.timeout_s)
        check_seconds("inactivity_timeout_s", self.inactivity_timeout_s)
        if self.rdzv_endpoint is not None:
            host, _, port = self.rdzv_endpoint.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"rendezvous endpoint {self.rdzv_endpoint!r}: expected HOST:PORT, e.g. node1:29400")
        if not self.rdzv_id:
            raise ValueError("rdzv_id must not be empty")

    def watchdog(self, workdir: Path) -> Watchdog:
        """The clocks of a cell running from workdir, started now."""
        return Watchdog(workdir, timeout_s=self.timeout_s, inactivity_timeout_s=self.inactivity_timeout_s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_argv(cell: Cell, launch: Launch, cell_json: Path, out: Path) -> list[str]:
    """The torchrun command line of a cell: one process per GPU (or CPU rank) on this node."""
    if cell.launched_nodes > 1:
        if launch.rdzv_endpoint is None:
            raise ValueError(f"a cell of {cell.nnodes} nodes needs a rendezvous endpoint (--rdzv-endpoint HOST:PORT)")
        rendezvous = [
            "--rdzv-backend", "c10d",
            "--rdzv-endpoint", launch.rdzv_endpoint,
            "--rdzv-id", launch.rdzv_id,
        ]  # fmt: skip
    else:
        rendezvous = ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(cell.launched_nodes),
        "--nproc-per-node", str(cell.launched_ranks_per_node),
        "--monitor-interval", "0.1",
        *rendezvous,
        *worker_argv(cell_json, out, launch.inactivity_timeout_s),
    ]  # fmt: skip


def worker_env(cell: Cell, launch: Launch) -> dict[str, str]:
    """The ranks' environment: this one, plus CPU threading and the import path."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(same_bench_path(env.get("PYTHONPATH")))
    if cell.device == "cpu":
        # glibc reserves 64 MiB of address space per thread arena, which a CPU memory cap would count.
        env["MALLOC_ARENA_MAX"] = "2"
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cell.launched_ranks_per_node))
    if cell.device == "cpu" and cell.max_memory_gib is not None:
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


def gpu_shortage(cells: list[Cell], num_gpus: int, *, matrix: bool = False) -> str | None:
    """Why some CUDA cells cannot run on a node with num_gpus visible GPUs, and what to give instead; None if all fit.

    The advice is in the options of the command: a matrix's (run) or a cell's (cell, search). A
    matrix is never advised onto the CPU: a matrix made for GPUs (r50 on 618K classes over 8 ranks)
    would run for hours there, or not at all.
    """
    short = [cell for cell in cells if cell.on_gpu and cell.launched_ranks_per_node > num_gpus]
    if not short:
        return None
    need = max(cell.launched_ranks_per_node for cell in short)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    shown = f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "CUDA_VISIBLE_DEVICES unset"
    if matrix:
        fix = (
            f"give --emulate-ranks {need} (rank 0 of each cell alone on one GPU) or --nproc {num_gpus} or fewer"
            if num_gpus
            else "run it on a GPU machine (pfcbench plan predicts each cell's memory without one)"
        )
    else:
        fix = (
            f"give --emulated (rank 0 of the cell alone on one GPU) or --nproc {num_gpus} or fewer"
            if num_gpus
            else "run it on a GPU machine, or give --device cpu to run it on the CPU"
        )
    return (
        f"{len(short)} CUDA cell(s) need {need} GPUs per node but {num_gpus} are visible here ({shown}); "
        f"{fix}; nothing was run"
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


class LocalLauncher(Launcher):
    """torchrun on this machine, one cell at a time: cells on one machine would share its GPUs and cores."""

    def __init__(self, launch: Launch) -> None:
        self.launch = launch

    def submit(self, cell: Cell, results_dir: Path) -> Job:
        """Start the cell's torchrun in its own process group from a scratch folder of this node.

        The folder is per node, so that the nodes of a cell of several nodes may share the results folder.
        """
        workdir = results_dir / "work" / f"{cell.cell_id}.{socket.gethostname()}"
        remove(workdir, scratch_area(results_dir))
        return self.start(cell, workdir)

    def start(self, cell: Cell, workdir: Path) -> Job:
        launch = dataclasses.replace(self.launch, rdzv_id=cell.cell_id)
        workdir.mkdir(parents=True, exist_ok=True)
        cell_json = workdir / "cell.json"
        cell_json.write_text(json.dumps(cell.to_dict()))
        argv = torchrun_argv(cell, launch, cell_json, workdir)
        with open(workdir / "torchrun.log", "wb") as log_file:
            proc = subprocess.Popen(
                argv, stdout=log_file, stderr=subprocess.STDOUT, env=worker_env(cell, launch), start_new_session=True,
                preexec_fn=die_with_parent,
            )  # fmt: skip
        return Job(cell=cell, workdir=workdir, watchdog=launch.watchdog(workdir), handle=proc)

    def poll(self, job: Job) -> Ended | None:
        proc = job.handle
        timeout = None if proc.poll() is not None else job.watchdog.expired()
        if proc.returncode is None and timeout is None:
            return None
        self.cancel(job, job.workdir)  # whatever ended, no process of its tree is left
        returncode = None if timeout else proc.returncode
        log = log_tail(job.workdir, LOG_SCAN_CHARS)
        return Ended(returncode, timeout, f"torchrun exited with {returncode}: {oom_line(log) or log[-2000:]}", {})

    def cancel(self, job: Job, results_dir: Path | None = None) -> None:
        kill_tree(job.handle.pid)
        job.handle.wait()

    def collect(self, job: Job, ended: Ended, results_dir: Path) -> tuple[dict, bool]:
        return keep_log(finish_record(job, ended), job.workdir, results_dir), holds_rank0(job.cell, job.workdir)


def run_cell(cell: Cell, workdir: Path, launch: Launch) -> dict:
    """Run one cell in workdir (which must be empty or absent) and return its record.

    Whatever happens, including KeyboardInterrupt, no process of its torchrun is left.
    """
    launcher = LocalLauncher(launch)
    job = launcher.start(cell, workdir)
    try:
        while (ended := launcher.poll(job)) is None:
            time.sleep(PROCESS_POLL_S)
    except BaseException:
        launcher.cancel(job)
        raise
    return finish_record(job, ended)
