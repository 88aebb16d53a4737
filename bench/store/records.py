"""The result record: one builder for every status (ok, oom, error, timeout, skipped) and every launcher.

A cell's ranks each write rank-N.json (and ranks.json after a clean finish); the launchers (local
torchrun, Slurm) and pruning hand what they saw to `build_record` or `skipped_record` here, so a
record has the same keys whoever made it.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from bench import __version__
from bench.config import Cell
from bench.mfu import mfu_figures
from bench.rank.oom import oom_line

SCHEMA = 1
LOG_SCAN_CHARS = 1 << 20
"""How much of the end of a cell's log is searched for an out-of-memory that no rank file reports."""
RANK_KEYS = (
    "rank", "host", "threads", "status", "phase", "peak_allocated_mib", "peak_reserved_mib", "peak_rss_mib",
    "warmup_peak_allocated_mib", "warmup_peak_reserved_mib", "cuda_overhead_mib",
    "grad_scale", "skipped_steps", "warmup_skipped_steps",
    "step_time_s_median", "forward_time_s_median", "nonfinite_losses", "loader_wait_s",
)  # fmt: skip
"""What a record keeps of each rank's file."""


class RankFileError(ValueError):
    """A rank file that holds JSON but not a rank's figures (no whole-number rank, no status); the text names
    the file and the key."""


def read_ranks(workdir: Path) -> list[dict]:
    """The ranks' files: all ranks from ranks.json after a clean finish, else this node's rank-N.json.

    A file cut short (not JSON) is left out, as a rank that wrote nothing; RankFileError for one that is
    JSON but not a rank's figures.
    """
    path = workdir / "ranks.json"
    try:
        ranks = json.loads(path.read_text())["ranks"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        ranks = None
    if isinstance(ranks, list):
        return sorted((checked_rank(rank, f"{path}: ranks[{i}]") for i, rank in enumerate(ranks)), key=by_rank)
    ranks = []
    for path in sorted(workdir.glob("rank-*.json")):
        try:
            ranks.append(checked_rank(json.loads(path.read_text()), str(path)))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
    return sorted(ranks, key=by_rank)


def by_rank(rank: dict) -> int:
    return rank["rank"]


def checked_rank(rank, where: str) -> dict:
    """rank, where it is an object with a whole-number rank, a status and a host; else RankFileError naming where."""
    if not isinstance(rank, dict):
        raise RankFileError(f"{where}: not a rank's figures (a JSON {type(rank).__name__}, not an object)")
    for key, kind, what in (("rank", int, "a whole number"), ("status", str, "text"), ("host", str, "text")):
        value = rank.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            said = "no" if key not in rank else f"{str(value)[:40]!r} as its"
            raise RankFileError(f"{where}: {said} {key!r} ({what} expected): a damaged rank file")
    for key in ("gpus", "peer_failures"):
        listed = rank.get(key, [])
        if not isinstance(listed, list) or not all(isinstance(entry, dict) for entry in listed):
            raise RankFileError(f"{where}: {key!r} is not a list of objects: a damaged rank file")
    for i, peer in enumerate(rank.get("peer_failures", [])):
        if (
            not isinstance(peer.get("rank"), int)
            or isinstance(peer["rank"], bool)
            or not isinstance(peer.get("status"), str)
        ):
            raise RankFileError(
                f"{where}: 'peer_failures'[{i}] has no whole-number 'rank' and 'status': a damaged rank file"
            )
    return rank


def rank_files_left(workdir: Path) -> bool:
    """Whether the cell's ranks left a file that is JSON (whole or damaged): a job that left one is not lost."""
    try:
        return bool(read_ranks(workdir))
    except RankFileError:
        return True


def holds_rank0(cell: Cell, workdir: Path) -> bool:
    """Whether global rank 0 ran on this node: the node that records a cell of several nodes."""
    return cell.launched_nodes == 1 or (workdir / "rank-0.json").exists()


def failures(ranks: list[dict]) -> list[dict]:
    """Every failed rank: those that wrote a file here, then those that told them through the store."""
    failed = [r for r in ranks if r["status"] != "ok"]
    seen = {r["rank"] for r in ranks}
    for rank in ranks:
        for peer in rank.get("peer_failures", []):
            if peer["rank"] not in seen:
                seen.add(peer["rank"])
                failed.append(peer)
    return failed


def cell_status(ranks: list[dict], world_size: int, returncode: int | None, timeout: str | None, log: str = "") -> str:
    """oom wins over everything (a rank, or the log of one that an NCCL watchdog aborted); then ok, timeout, error.

    A cell whose ranks all wrote complete figures is ok even if a rank then crashed or hung in
    teardown: the measurement is whole, and the record notes the teardown failure.
    """
    statuses = {r["status"] for r in [*ranks, *failures(ranks)]}
    if "oom" in statuses:
        return "oom"
    if len(ranks) == world_size and all(complete(r) for r in ranks):
        return "ok"
    if oom_line(log):
        return "oom"
    return "timeout" if timeout else "error"


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


def base_record(cell: Cell, status: str, *, started: float, duration_s: float) -> dict:
    """The keys every record has, whatever its status (schema 1)."""
    return {
        "schema": SCHEMA,
        "cell_id": cell.cell_id,
        "config": cell.to_dict(),
        "world_size": cell.world_size,
        "per_gpu_batch": cell.per_gpu_batch,
        "status": status,
        "started_at": started,
        "duration_s": duration_s,
        "harness_version": __version__,
    }


def build_record(
    cell: Cell,
    ranks: list[dict],
    status: str,
    *,
    error: str | None,
    started: float,
    duration_s: float,
    **launcher_fields,
) -> dict:
    """The record of one cell attempt from what its ranks wrote; launcher_fields (a Slurm job id) go in as given."""
    record = base_record(cell, status, started=started, duration_s=duration_s)
    record.update(
        hosts=sorted({r["host"] for r in ranks}),
        ranks=[{k: r.get(k) for k in RANK_KEYS} for r in ranks],
        gpus=[dict(gpu, host=r["host"], rank=r["rank"]) for r in ranks for gpu in r.get("gpus", [])],
        cuda_overhead_mib_max=max_or_none(r.get("cuda_overhead_mib") for r in ranks),
    )
    failed = failures(ranks)
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
        if status == "oom" and first["status"] != "oom":
            record["error"] = f"out of memory, read from the log: {error}"[-2000:]
    else:
        record["error"] = error
    record.update(launcher_fields)
    return record


def skipped_record(cell: Cell, reason: str) -> dict:
    """The record of a cell not run, and why (an oom it is implied by, or its predicted memory)."""
    record = base_record(cell, "skipped", started=time.time(), duration_s=0.0)
    record["reason"] = reason
    return record


def oom_reason(cause: dict) -> str:
    """Why a cell is skipped when the oom record `cause` implies it would run out of memory too."""
    return f"implied by oom of cell {cause['cell_id']} at batch size {cause['config']['batch_size']}"


def figures(cell: Cell, ranks: list[dict]) -> dict:
    """Samples/sec, step times, memory and energy of a finished cell.

    An emulated cell's figures are those of a job whose every rank does what its rank 0 did.
    """
    if cell.emulated:
        ranks = ranks * cell.world_size
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
        warmup_peak_reserved_mib_max=max_or_none(r.get("warmup_peak_reserved_mib") for r in ranks),
        grad_scale=lead.get("grad_scale"),
        skipped_steps_max=max_or_none(r.get("skipped_steps") for r in ranks),
        gpu_mem_used_mib_max=max_or_none(g.get("mem_used_peak_mib") for g in gpus),
        power_w=sum(powers) if gpus and len(powers) == len(gpus) else None,
        energy_j_per_1k_samples=energy_j / samples * 1000 if energy_j is not None else None,
        flops_per_sample=flops_per_sample(cell, ranks),
    )
    names = [r["gpus"][0].get("name") if r.get("gpus") else None for r in ranks]
    result.update(mfu_figures(result["flops_per_sample"], result["samples_per_s"], names, cell.precision, cell.tf32))
    result.update(data_figures(ranks, measured_s))
    return result


def data_figures(ranks: list[dict], measured_s: float) -> dict:
    """Non-finite losses (the most of any rank) and, when the ranks read records, their loader waits.

    loader_wait_s_windows: per window, the longest any rank waited for its batches;
    loader_wait_fraction: their sum over the measured time.
    """
    result = {"nonfinite_losses": max_or_none(r.get("nonfinite_losses") for r in ranks)}
    waits = [r["loader_wait_s"] for r in ranks if r.get("loader_wait_s")]
    if waits and len(waits) == len(ranks):
        result["loader_wait_s_windows"] = [max(window) for window in zip(*waits)]
        result["loader_wait_fraction"] = sum(result["loader_wait_s_windows"]) / measured_s if measured_s else None
    return result


def flops_per_sample(cell: Cell, ranks: list[dict]) -> float | None:
    """The FLOPs of one training step over all ranks, per sample of the global batch."""
    counts = [r.get("step_flops") for r in ranks]
    return sum(counts) / cell.batch_size if counts and None not in counts else None


def summarise(window_times_s: list[float], steps_per_window: int, batch_size: int) -> dict:
    """Global samples/sec per window, their median and spread."""
    rates = [steps_per_window * batch_size / t for t in window_times_s]
    return {
        "samples_per_s": statistics.median(rates),
        "samples_per_s_min": min(rates),
        "samples_per_s_max": max(rates),
        "samples_per_s_windows": rates,
        "step_time_s_median": statistics.median(window_times_s) / steps_per_window,
    }


def max_or_none(values) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None
