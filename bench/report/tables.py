"""A section of a matrix as a table of text: each row's cell, the record it shows, the value each column prints.

The tables are pandas DataFrames printed by tabulate in GitHub's markdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import pandas as pd

from bench.config import Cell
from bench.matrix import METRICS, SEARCH_METRICS, Column, Row, Section
from bench.numbers import is_number
from bench.plan.search import bounds, recorded_probes
from bench.report.marks import EMULATED, LEGEND, NOT_RUN, emulated_mark, mark, speed_text
from bench.store.results import is_ok
from bench.verdicts import legend_lines, speed_mark, training_speed

AUTO_FORMATS = {
    "samples_per_s": "speed",
    "published": "speed",
    "spread": "percent",
    "ratio": "ratio",
    "published_gpu_mem_gb": "approx1",
    "gpu_mem_ratio": "ratio",
    "step_time_ms": "float1",
    "gpu_mem_gb": "float1",
    "peak_allocated_gib": "float2",
    "peak_rss_gib": "float2",
    "power_w": "int",
    "energy_per_1k_j": "float1",
    "tflops": "float2",
    "mfu": "percent",
    "largest": "int",
    "smallest_oom": "int",
    "num_probes": "int",
}


FORMATTERS = {
    "text": str,
    "check": lambda value: "√" if value else "×",
    "speed": lambda value: f"~{round(value)}",
    "approx1": lambda value: f"~{value:.1f}",
    "int": lambda value: str(round(value)),
    "float1": lambda value: f"{value:.1f}",
    "float2": lambda value: f"{value:.2f}",
    "percent": lambda value: f"{value * 100:.1f}%",
    "ratio": lambda value: f"{value:.2f}",
}


SCALED_METRICS = {
    "samples_per_s": ("samples_per_s", 1.0),
    "step_time_ms": ("step_time_s_median", 1000.0),
    "gpu_mem_gb": ("gpu_mem_used_mib_max", 1 / 1024),
    "peak_allocated_gib": ("peak_allocated_mib_max", 1 / 1024),
    "peak_rss_gib": ("peak_rss_mib_max", 1 / 1024),
    "power_w": ("power_w", 1.0),
    "energy_per_1k_j": ("energy_j_per_1k_samples", 1.0),
    "tflops": ("achieved_tflops", 1.0),
    "mfu": ("mfu", 1.0),
}
"""Metric -> (record key, factor): a GB here is 1024 MiB, as nvidia-smi and gpustat users read it."""


PUBLISHED_COLUMNS = {
    "samples_per_s": (Column(header="Published", field="published"), Column(header="Ratio", field="ratio")),
    "gpu_mem_gb": (
        Column(header="Published Mem(GB)", field="published_gpu_mem_gb"),
        Column(header="Mem ratio", field="gpu_mem_ratio"),
    ),
}
"""Columns a report adds after a measured one where rows have a published figure to set beside it."""


FAIL_AGAINST_FAIL = {
    (True, True): "both Fail",
    (True, False): "measured Fail",
    (False, True): "published Fail",
}
"""The ratio column of a row where the cell (first) or the published run (second) ran out of memory."""


def metric_value(name: str, row: Row, record: dict | None) -> Any:
    """A result column's value for one row: a number, a mark, "Fail" (published) or None (blank)."""
    if name == "published":
        return row.published
    if name == "status":
        return record["status"] if record else "not run"
    if name == "published_gpu_mem_gb":
        return row.published_gpu_mem_gb
    if name in SEARCH_METRICS:  # a probe that trained NaN still answers the memory question it was run for
        value = record[name] if record else None
        return mark(record) if name == "largest" and value is None else value
    if is_ok(record) and training_speed(record) is None:  # not a training speed: neither it nor figures from it
        return speed_text(record) if name == "samples_per_s" else None
    if name == "ratio":
        return speed_ratio(row, record)
    if name == "gpu_mem_ratio":
        measured = metric_value("gpu_mem_gb", row, record)
        return measured / row.published_gpu_mem_gb if is_number(measured) and row.published_gpu_mem_gb else None
    if not is_ok(record):
        return mark(record) if name == "samples_per_s" else None
    if name == "spread":
        low, high, median = (record.get(k) for k in ("samples_per_s_min", "samples_per_s_max", "samples_per_s"))
        return (high - low) / median if all(is_number(v) for v in (low, high, median)) and median else None
    key, factor = SCALED_METRICS[name]
    value = record.get(key)
    return value * factor if is_number(value) else None


def speed_ratio(row: Row, record: dict | None) -> float | str | None:
    """Measured over published samples/sec; where either ran out of memory, which did (see FAIL_AGAINST_FAIL)."""
    measured_fail = record is not None and record.get("status") == "oom"
    speed = training_speed(record)
    if (measured_fail or speed is not None) and (row.published == "Fail" or is_number(row.published)):
        if measured_fail or row.published == "Fail":
            return FAIL_AGAINST_FAIL[(measured_fail, row.published == "Fail")]
        return speed / row.published
    return None


def with_published(section: Section) -> tuple[Column, ...]:
    """The section's columns plus Published and Ratio after each measured column that rows have a published figure for.

    A section that shows a published column itself is left as written.
    """
    fields = {c.field for c in section.columns}
    has_figure = {
        "samples_per_s": any(row.published is not None for row in section.rows),
        "gpu_mem_gb": any(row.published_gpu_mem_gb is not None for row in section.rows),
    }
    columns = []
    for column in section.columns:
        columns.append(column)
        added = PUBLISHED_COLUMNS.get(column.field, ())
        if has_figure.get(column.field) and not fields & {c.field for c in added}:
            columns.extend(added)
    return tuple(columns)


def format_value(value: Any, fmt: str, field: str | None) -> str:
    """Print a value in a column format; text (marks, "Fail") prints as it is and None as blank."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if fmt == "auto":
        fmt = AUTO_FORMATS.get(field, "check" if isinstance(value, bool) else "text")
    return FORMATTERS[fmt](value)


def cell_text(column: Column, row: Row, record: dict | None) -> str:
    """What one table cell prints: the row's label, else the column's text, label or formatted value."""
    if column.header in row.labels:
        return row.labels[column.header]
    if column.text is not None:
        return column.text
    value = metric_value(column.field, row, record) if column.field in METRICS else getattr(row.cell, column.field)
    if str(value) in column.labels:
        return column.labels[str(value)]
    text = format_value(value, column.format, column.field)
    return (
        text + emulated_mark(record) + speed_mark(record)
        if column.field == "samples_per_s" and is_number(value)
        else text
    )


def row_records(section: Section, records_by_id: dict[str, dict], *, as_published: bool = False) -> list[dict | None]:
    """The record each row shows: its cell's, in a search section its search's answer, in a row
    pfcbench does not run its published figures (as_published) or its not_run mark."""
    if section.search is not None:
        return [search_answer(row.cell, section.search, records_by_id) for row in section.rows]
    return [
        records_by_id.get(row.cell.cell_id) if row.not_run is None else not_run_record(row, as_published)
        for row in section.rows
    ]


def not_run_record(row: Row, as_published: bool) -> dict:
    """What a row pfcbench does not run shows: its published figures as a record, or the not_run mark."""
    if as_published and row.published is not None:
        return published_record(row) | {"not_run": row.not_run}
    return {"cell_id": row.cell.cell_id, "config": row.cell.to_dict(), "status": "not_run", "not_run": row.not_run}


def published_record(row: Row) -> dict:
    """A row's published figures as a record: ok at the published samples/sec (oom where it says Fail), with
    its published GPU memory. The row must have a published figure."""
    record = {"cell_id": row.cell.cell_id, "config": row.cell.to_dict()}
    record["status"] = "oom" if row.published == "Fail" else "ok"
    if is_number(row.published):
        record["samples_per_s"] = float(row.published)
    if row.published_gpu_mem_gb is not None:
        record["gpu_mem_used_mib_max"] = row.published_gpu_mem_gb * 1024
    return record


def search_answer(cell: Cell, field: str, records_by_id: dict[str, dict]) -> dict | None:
    """The record of the largest value that ran ok (an oom record if none did), with the search's answer."""
    probes = recorded_probes(records_by_id, cell, field)
    if not probes:
        return None
    largest, smallest_oom = bounds({value: record["status"] == "ok" for value, record in probes.items()})
    shown = probes[largest] if largest is not None else probes[min(probes)]
    return dict(shown, largest=largest, smallest_oom=smallest_oom, num_probes=len(probes))


def section_frame(
    section: Section, records_by_id: dict[str, dict], *, as_published: bool = False, added: Sequence[Added] = ()
) -> pd.DataFrame:
    """The section's table as text, one row per matrix row, columns in the matrix's order.

    Unless as_published, rows with a published figure get it and the ratio beside the measured one.
    The added columns (hours per training run, say) follow the samples/sec column, or end the table.
    """
    columns = section.columns if as_published else with_published(section)
    records = row_records(section, records_by_id, as_published=as_published)
    rows = [[cell_text(c, row, record) for c in columns] for row, record in zip(section.rows, records)]
    frame = pd.DataFrame(rows, columns=[c.header for c in columns])
    fields = [c.field for c in columns]
    place = fields.index("samples_per_s") + 1 if "samples_per_s" in fields else len(columns)
    for extra in added:
        for header, texts in reversed(extra.columns([row.cell for row in section.rows], records).items()):
            frame.insert(place, header, texts)
    return frame


class Added(Protocol):
    """Columns a report (or a plan) adds to every table, computed from each row's cell and the record it shows."""

    note: str
    """A note under the report's others saying how the columns are computed."""

    def columns(self, cells: Sequence[Cell], records: Sequence[dict | None]) -> dict[str, list[str]]: ...


def markdown_table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, tablefmt="github", disable_numparse=True)


def legend(frame: pd.DataFrame, records: list[dict | None]) -> str:
    """One line explaining each mark that appears in the table, with the reasons cells were skipped."""
    shown = set(frame.to_numpy().ravel())
    if any(emulated_mark(record) for record in records):
        shown.add(EMULATED.strip())
    reasons = list(dict.fromkeys(r["reason"] for r in records if r and r["status"] == "skipped" and r.get("reason")))
    not_run = list(dict.fromkeys(r["not_run"] for r in records if r and r.get("not_run")))
    if not_run:
        shown.add(NOT_RUN)
    parts = []
    for text, meaning in LEGEND.items():
        if text in shown:
            detail = f" ({'; '.join(reasons)})" if text == "Skipped" and reasons else ""
            detail = f" ({'; '.join(not_run)})" if text == NOT_RUN else detail
            parts.append(f"{text}: {meaning}{detail}.")
    return " ".join(parts + legend_lines(records))
