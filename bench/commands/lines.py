"""The one-line texts the commands print about a cell and what became of it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bench.config import Cell
from bench.report.fields import SAID_BY_RANKS, field_words, varying_fields
from bench.report.marks import emulated_mark
from bench.verdicts import not_a_speed, training_speed


def describe(record: dict) -> str:
    """The line `pfcbench cell` prints: the speed, its spread, the step time and the peak memory."""
    if record["status"] != "ok":
        return f"{record['cell_id']} {record['status']}"
    memory = record.get("peak_allocated_mib_max") or record.get("peak_rss_mib_max")
    speed = training_speed(record)
    if speed is None:
        return f"{record['cell_id']} ok, but {not_a_speed(record)}: no training speed; peak memory {memory:.0f} MiB per rank"
    return (
        f"{record['cell_id']} ok: {speed:.1f} samples/s{emulated_mark(record)} "
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
        speed = training_speed(record)
        shown = (
            f"{speed:.1f} samples/s{emulated_mark(record)}" if speed else f"{not_a_speed(record)}, no training speed"
        )
        return f"ok, {shown} ({record['duration_s']:.0f} s){teardown}"
    return f"{record['status']} ({record.get('reason') or failure_line(record)})"


def outcome(record: dict) -> str:
    """A record's status, or for an ok cell that is no training speed why not ("NaN loss"): what a sweep's summary counts."""
    return not_a_speed(record) if record["status"] == "ok" and training_speed(record) is None else record["status"]


LINE_FIELDS = ("backbone", "classes", "batch_size", "precision", "sample_rate", "emulated", *SAID_BY_RANKS)
"""Cell fields every cell line names; line_fields gives the others that tell a run's cells apart."""


def line_fields(cells: Iterable[Cell]) -> list[str]:
    """The fields besides LINE_FIELDS that vary among a run's cells (tf32, data, impl, a memory cap)."""
    return varying_fields(cells, besides=LINE_FIELDS)


def cell_line(cell: Cell, shown: Sequence[str] = ()) -> str:
    """What a cell trains, as the progress bar of `pfcbench run` names it, with the fields in shown
    (line_fields of the run's cells) where not at their default: "tf32" where on, "records" for record data."""
    rate = f" pfc {cell.sample_rate:g}" if cell.partial_fc else ""
    ranks = f"rank 0 of {cell.world_size} ranks, emulated" if cell.emulated else f"{cell.world_size} ranks"
    words = [w for w in (field_words(name, getattr(cell, name)) for name in shown) if w]
    what = [f"{cell.backbone} {cell.classes} classes", f"batch {cell.batch_size}", f"{cell.precision}{rate}"]
    return ", ".join([*what, *words, ranks])
