"""A section of a matrix as a table of values: each row's cell, the record it shows, each column's entry.

A table is a pandas DataFrame of bench.metrics.Entry (a value and its marks, apart); markdown_table
prints it, by tabulate in GitHub's markdown, making each entry's text there and only there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import pandas as pd

from bench.config import Cell
from bench.matrix import Column, Row, Section
from bench.metrics import METRICS, Entry
from bench.numbers import is_number
from bench.plan.search import bounds, recorded_probes

PUBLISHED_COLUMNS = {
    measured: tuple(Column(header=METRICS[name].header, field=name) for name in added)
    for measured, added in (
        ("samples_per_s", ("published", "ratio")),
        ("gpu_mem_gb", ("published_gpu_mem_gb", "gpu_mem_ratio")),
    )
}
"""Columns a report adds after a measured one where rows have a published figure to set beside it."""


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


def table_columns(section: Section, *, as_published: bool = False) -> tuple[Column, ...]:
    """The columns of the section's table: as the matrix writes them where as_published, else with_published."""
    return section.columns if as_published else with_published(section)


def entry(column: Column, row: Row, record: dict | None) -> Entry:
    """One table cell: the metric's entry or the cell field's value, in the column's format, with the text
    the matrix fixes for it (the row's label, the column's constant, or the column's label for the value)."""
    if column.text is not None:
        return Entry(label=row.labels.get(column.header, column.text))
    if column.field in METRICS:
        found = METRICS[column.field].read(row, record)
    else:
        found = Entry(getattr(row.cell, column.field))
    fmt = column.format
    if fmt == "auto":
        fmt = found.format if column.field in METRICS else "check" if isinstance(found.value, bool) else "text"
    label = row.labels.get(column.header, column.labels.get(found.key))
    return dataclasses.replace(found, format=fmt, label=label)


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
    """The section's table of entries, one row per matrix row, columns in the matrix's order.

    Unless as_published, rows with a published figure get it and the ratio beside the measured one.
    The added columns (hours per training run, say) follow the samples/sec column, or end the table.
    """
    columns = table_columns(section, as_published=as_published)
    records = row_records(section, records_by_id, as_published=as_published)
    rows = [[entry(c, row, record) for c in columns] for row, record in zip(section.rows, records)]
    frame = pd.DataFrame(rows, columns=[c.header for c in columns])
    fields = [c.field for c in columns]
    place = fields.index("samples_per_s") + 1 if "samples_per_s" in fields else len(columns)
    for extra in added:
        for header, entries in extra.entries([row.cell for row in section.rows], records).items():
            frame.insert(place, header, entries)
            place += 1
    return frame


class Added(Protocol):
    """Columns a report (or a plan) adds to every table, computed from each row's cell and the record it shows."""

    note: str
    """A note under the report's others saying how the columns are computed."""

    def entries(self, cells: Sequence[Cell], records: Sequence[dict | None]) -> dict[str, list[Entry]]:
        """Header: the column's entry for each cell."""
        ...


def markdown_table(frame: pd.DataFrame) -> str:
    """The table in GitHub's markdown: each entry's text, any other value (a spec's text) as it is."""
    texts = frame.map(lambda value: value.text() if isinstance(value, Entry) else value)
    return texts.to_markdown(index=False, tablefmt="github", disable_numparse=True)
