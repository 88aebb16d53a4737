"""The one-line texts the commands print about a cell and what became of it."""

from __future__ import annotations

from bench.config import Cell
from bench.report.marks import emulated_mark


def describe(record: dict) -> str:
    """The line `pfcbench cell` prints: the speed, its spread, the step time and the peak memory."""
    if record["status"] != "ok":
        return f"{record['cell_id']} {record['status']}"
    memory = record.get("peak_allocated_mib_max") or record.get("peak_rss_mib_max")
    return (
        f"{record['cell_id']} ok: {record['samples_per_s']:.1f} samples/s{emulated_mark(record)} "
        f"(min {record['samples_per_s_min']:.1f}, max {record['samples_per_s_max']:.1f}), "
        f"{record['step_time_s_median'] * 1000:.1f} ms/step, peak memory {memory:.0f} MiB per rank"
    )


def failure_line(record: dict) -> str:
    """One line saying what went wrong and where."""
    where = f"rank {record['failed_rank']} in {record['phase']}: " if record.get("failed_rank") is not None else ""
    text = (record.get("error") or "").strip().splitlines()
    return where + (text[-1] if text else "no error text")


def record_line(record: dict) -> str:
    """What became of a cell, in a few words."""
    if record["status"] == "ok":
        teardown = "; a rank failed in teardown, see the record" if record.get("teardown_error") else ""
        speed = f"{record['samples_per_s']:.1f} samples/s{emulated_mark(record)}"
        return f"ok, {speed} ({record['duration_s']:.0f} s){teardown}"
    return f"{record['status']} ({record.get('reason') or failure_line(record)})"


def cell_line(cell: Cell) -> str:
    """What a cell trains, as the progress bar of `pfcbench run` names it."""
    rate = f" pfc {cell.sample_rate:g}" if cell.partial_fc else ""
    ranks = f"rank 0 of {cell.world_size} ranks, emulated" if cell.emulated else f"{cell.world_size} ranks"
    return f"{cell.backbone} {cell.classes} classes, batch {cell.batch_size}, {cell.precision}{rate}, {ranks}"
