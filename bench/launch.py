"""Run one cell as a torchrun job and turn what its ranks wrote into one result record."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import __version__
from bench.config import Cell, check_seconds
from bench.measure import summarise
from bench.results import SCHEMA

KILL_GRACE_S = 5.0
POLL_S = 0.1


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_argv(cell: Cell, launch: Launch, cell_json: Path, out: Path) -> list[str]:
    """The torchrun command line of a cell: one process per GPU (or CPU rank) on this node."""
    if cell.nnodes > 1:
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
        "--nnodes", str(cell.nnodes),
        "--nproc-per-node", str(cell.nproc_per_node),
        "--monitor-interval", "0.1",
        *rendezvous,
        "-m", "bench.worker", "--cell", str(cell_json), "--out", str(out),
    ]  # fmt: skip


def worker_env(cell: Cell) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # glibc reserves 64 MiB of address space per thread arena, which a CPU memory cap would count.
    env["MALLOC_ARENA_MAX"] = "2"
    if cell.device == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cell.nproc_per_node))
    return env


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send sig to this process when its parent dies, however it dies (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG


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


def last_activity(paths: list[Path], since: float) -> float:
    times = [since]
    for path in paths:
        try:
            times.append(path.stat().st_mtime)
        except FileNotFoundError:
            pass
    return max(times)


def run_torchrun(argv: list[str], env: dict[str, str], workdir: Path, launch: Launch) -> tuple[int | None, str | None]:
    """Run torchrun in its own process group; return (exit code, timeout reason or None).

    Whatever happens, including KeyboardInterrupt in the caller, no process of the group is left.
    """
    log = workdir / "torchrun.log"
    heartbeat = workdir / "heartbeat"
    started = time.time()
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=die_with_parent,
        )  # fmt: skip
    try:
        while proc.poll() is None:
            now = time.time()
            if now - started > launch.timeout_s:
                return None, f"wall-clock timeout after {launch.timeout_s:g} s"
            if now - last_activity([heartbeat, log], started) > launch.inactivity_timeout_s:
                return None, f"no progress for {launch.inactivity_timeout_s:g} s"
            time.sleep(POLL_S)
        return proc.returncode, None
    finally:
        kill_tree(proc.pid)
        proc.wait()


def read_ranks(workdir: Path) -> list[dict]:
    """The ranks' files: all ranks from ranks.json after a clean finish, else this node's rank-N.json."""
    try:
        return json.loads((workdir / "ranks.json").read_text())["ranks"]
    except (OSError, json.JSONDecodeError, KeyError):
        pass
    ranks = []
    for path in sorted(workdir.glob("rank-*.json")):
        try:
            ranks.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return sorted(ranks, key=lambda r: r["rank"])


def holds_rank0(cell: Cell, workdir: Path) -> bool:
    """Whether global rank 0 ran on this node: the node that records a cell of several nodes."""
    return cell.nnodes == 1 or (workdir / "rank-0.json").exists()


def classify(ranks: list[dict], world_size: int, returncode: int | None, timeout: str | None) -> str:
    """oom wins over everything (a rank ran out of memory); then ok, timeout, error.

    A cell whose ranks all wrote complete figures is ok even if a rank then crashed or hung in
    teardown: the measurement is whole, and the record notes the teardown failure.
    """
    statuses = {r["status"] for r in ranks}
    if "oom" in statuses:
        return "oom"
    if len(ranks) == world_size and all(complete(r) for r in ranks):
        return "ok"
    if timeout:
        return "timeout"
    return "error"


def complete(rank: dict) -> bool:
    """Whether a rank's file holds its whole measurement."""
    return rank.get("status") == "ok" and all(
        isinstance(rank.get(key), list) for key in ("window_times_s", "step_times_s", "losses")
    )


def log_tail(workdir: Path, num_chars: int = 2000) -> str:
    try:
        return (workdir / "torchrun.log").read_text(errors="replace")[-num_chars:]
    except FileNotFoundError:
        return ""


def build_record(
    cell: Cell, ranks: list[dict], status: str, *, error: str | None, started: float, duration_s: float
) -> dict:
    """The result record of one cell attempt (schema 1)."""
    record = {
        "schema": SCHEMA,
        "cell_id": cell.cell_id,
        "config": cell.to_dict(),
        "world_size": cell.world_size,
        "per_gpu_batch": cell.per_gpu_batch,
        "status": status,
        "hosts": sorted({r["host"] for r in ranks}),
        "ranks": [
            {
                k: r.get(k)
                for k in ("rank", "host", "status", "phase", "peak_allocated_mib", "peak_reserved_mib", "peak_rss_mib")
            }
            for r in ranks
        ],
        "gpus": [dict(gpu, host=r["host"], rank=r["rank"]) for r in ranks for gpu in r.get("gpus", [])],
        "started_at": started,
        "duration_s": duration_s,
        "harness_version": __version__,
    }
    failed = [r for r in ranks if r["status"] != "ok"]
    if status == "ok":
        record.update(figures(cell, ranks))
        if error:
            record["teardown_error"] = f"after every rank had written its figures: {error}"
    elif failed:
        first = next((r for r in failed if r["status"] == status), failed[0])
        record.update(
            failed_rank=first["rank"],
            phase=first.get("phase"),
            oom_bytes=first.get("oom_bytes"),
            error=f"{first.get('exception')}: {first.get('error', '')}"[-2000:],
        )
    else:
        record["error"] = error
    return record


def figures(cell: Cell, ranks: list[dict]) -> dict:
    """Samples/sec, step times, memory and energy of a finished cell."""
    lead = ranks[0]
    result = summarise(lead["window_times_s"], cell.steps_per_window, cell.batch_size)
    measured_steps = cell.num_windows * cell.steps_per_window
    measured_s = sum(lead["window_times_s"])
    gpus = [gpu for r in ranks for gpu in r.get("gpus", [])]
    powers = [g["power_mean_w"] for g in gpus if g.get("power_mean_w") is not None]
    energies = [g["energy_j"] for g in gpus if g.get("energy_j") is not None]
    energy_j = sum(energies) if gpus and len(energies) == len(gpus) else None
    samples = measured_steps * cell.batch_size
    result.update(
        step_times_s=lead["step_times_s"],
        warmup_steps=cell.warmup_steps,
        measured_steps=measured_steps,
        measured_s=measured_s,
        loss_first=lead["losses"][0] if lead["losses"] else None,
        loss_last=lead["losses"][-1] if lead["losses"] else None,
        peak_allocated_mib_max=max_or_none(r.get("peak_allocated_mib") for r in ranks),
        peak_reserved_mib_max=max_or_none(r.get("peak_reserved_mib") for r in ranks),
        peak_rss_mib_max=max_or_none(r.get("peak_rss_mib") for r in ranks),
        gpu_mem_used_mib_max=max_or_none(g.get("mem_used_peak_mib") for g in gpus),
        power_w=sum(powers) if gpus and len(powers) == len(gpus) else None,
        energy_j_per_1k_samples=energy_j / samples * 1000 if energy_j is not None else None,
    )
    return result


def max_or_none(values) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def run_cell(cell: Cell, workdir: Path, launch: Launch) -> dict:
    """Run one cell in workdir (which must be empty or absent) and return its record."""
    workdir.mkdir(parents=True, exist_ok=True)
    cell_json = workdir / "cell.json"
    cell_json.write_text(json.dumps(cell.to_dict()))
    argv = torchrun_argv(cell, launch, cell_json, workdir)
    started = time.time()
    returncode, timeout = run_torchrun(argv, worker_env(cell), workdir, launch)
    ranks = read_ranks(workdir)
    status = classify(ranks, cell.world_size, returncode, timeout)
    clean = returncode == 0 and not timeout and status == "ok"
    error = None if clean else timeout or f"torchrun exited with {returncode}: {log_tail(workdir)}"
    return build_record(cell, ranks, status, error=error, started=started, duration_s=time.time() - started)
