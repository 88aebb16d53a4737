"""A section's samples/sec and peak memory as a PNG; matplotlib is imported only when a plot is drawn."""

from __future__ import annotations

import math
from pathlib import Path

from bench.matrix import Row, Section
from bench.numbers import is_number
from bench.report.fields import field_label
from bench.report.fields import varying_fields as varying_cell_fields
from bench.report.marks import EMULATED, speed_text
from bench.report.tables import row_records
from bench.store.results import is_ok
from bench.verdicts import training_speed

MEMORY_KEYS = {
    "gpu_mem_used_mib_max": "peak GPU memory (NVML), GiB",
    "peak_allocated_mib_max": "peak torch allocated, GiB",
    "peak_rss_mib_max": "peak RSS, GiB",
}
"""Peak memory a plot shows: the first of these that the section's records have, and its axis label."""


def varying_fields(section: Section) -> list[str]:
    """Cell fields that take more than one value among the section's rows, most distinct values first."""
    cells = [row.cell for row in section.rows]
    return sorted(varying_cell_fields(cells), key=lambda name: -len({getattr(cell, name) for cell in cells}))


def plot_section(section: Section, records_by_id: dict[str, dict], path: Path) -> Path | None:
    """Samples/sec (and peak memory where recorded) of a section's rows as a PNG; None if nothing finished.

    Against the one cell field that varies when it is a number (a line), else one bar per row.
    """
    from matplotlib.figure import Figure

    records = row_records(section, records_by_id)
    if not any(is_ok(r) for r in records):
        return None
    speeds = [training_speed(r) for r in records]
    series = [("samples/sec", [math.nan if s is None else s for s in speeds])]
    memory_key = next((k for k in MEMORY_KEYS if any(is_number(metric_or_nan(r, k)) for r in records)), None)
    if memory_key:
        series.append((MEMORY_KEYS[memory_key], [metric_or_nan(r, memory_key) / 1024 for r in records]))
    varying = varying_fields(section)
    numeric_axis = len(varying) == 1 and all(is_number(getattr(row.cell, varying[0])) for row in section.rows)
    fig = Figure(figsize=(6.4 * len(series), 0.5 * len(records) + 2.5), layout="constrained")
    fig.suptitle(section.title + (EMULATED if any(row.cell.emulated for row in section.rows) else ""))
    for ax, (name, values) in zip(fig.subplots(1, len(series), squeeze=False)[0], series, strict=True):
        if numeric_axis:
            draw_line(ax, [getattr(row.cell, varying[0]) for row in section.rows], values, varying[0], name)
        else:
            draw_bars(ax, [row_label(row, varying) for row in section.rows], values, name)
        for i, record in enumerate(records):
            if not is_ok(record) or (name == "samples/sec" and speeds[i] is None):  # no figure: its mark, or NaN
                xy = (getattr(section.rows[i].cell, varying[0]), 0) if numeric_axis else (0, i)
                ax.annotate(speed_text(record), xy, fontsize=8, color="tab:red", va="center")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def row_label(row: Row, varying: list[str]) -> str:
    return ", ".join(field_label(name, getattr(row.cell, name)) for name in varying) or row.cell.cell_id


def metric_or_nan(record: dict | None, key: str) -> float:
    value = record.get(key) if is_ok(record) else None
    return value if is_number(value) else math.nan


def draw_line(ax, xs: list, values: list[float], xlabel: str, ylabel: str) -> None:
    ax.plot(xs, values, marker="o")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def draw_bars(ax, labels: list[str], values: list[float], xlabel: str) -> None:
    positions = range(len(labels))
    ax.barh(positions, [0 if math.isnan(v) else v for v in values])
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
