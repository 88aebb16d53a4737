"""A section's samples/sec and peak memory as a PNG; matplotlib is imported only when a plot is drawn."""

from __future__ import annotations

import math
from pathlib import Path

from bench.matrix import Row, Section
from bench.metrics import EMULATED, METRICS, Metric
from bench.numbers import is_number
from bench.report.fields import cell_label
from bench.report.fields import varying_fields as varying_cell_fields
from bench.report.tables import row_records
from bench.store.results import is_ok

SPEED = METRICS["samples_per_s"]
MEMORY = tuple(METRICS[name] for name in ("gpu_mem_gb", "peak_allocated_gib", "peak_rss_gib"))
"""Peak memory a plot shows: the first of these that the section's records have."""


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
    speeds = [SPEED.read(row, record) for row, record in zip(section.rows, records)]
    series = [(SPEED.label, [nan_if_none(s.value) for s in speeds])]
    memory = next((m for m in MEMORY if any(is_number(figure(r, m)) for r in records)), None)
    if memory:
        series.append((f"{memory.label}, GiB", [figure(r, memory) for r in records]))
    varying = varying_fields(section)
    numeric_axis = len(varying) == 1 and all(is_number(getattr(row.cell, varying[0])) for row in section.rows)
    fig = Figure(figsize=(6.4 * len(series), 0.5 * len(records) + 2.5), layout="constrained")
    emulated = any(row.cell.emulated for row in section.rows)
    fig.suptitle(section.title + (f" {EMULATED.text}" if emulated else ""))
    for ax, (name, values) in zip(fig.subplots(1, len(series), squeeze=False)[0], series, strict=True):
        if numeric_axis:
            draw_line(ax, [getattr(row.cell, varying[0]) for row in section.rows], values, varying[0], name)
        else:
            draw_bars(ax, [row_label(row, varying) for row in section.rows], values, name)
        for i, record in enumerate(records):
            if not is_ok(record) or (name == SPEED.label and speeds[i].value is None):  # its mark, or NaN
                xy = (getattr(section.rows[i].cell, varying[0]), 0) if numeric_axis else (0, i)
                ax.annotate(speeds[i].text(), xy, fontsize=8, color="tab:red", va="center")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def row_label(row: Row, varying: list[str]) -> str:
    return cell_label(row.cell, varying) or row.cell.cell_id


def figure(record: dict | None, metric: Metric) -> float:
    """The metric's figure of an ok record (a cell that trained NaN still used its memory), else NaN."""
    value = record.get(metric.key) if is_ok(record) else None
    return value * metric.factor if is_number(value) else math.nan


def nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


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
