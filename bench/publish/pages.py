"""The pages of a site, one function each: a sweep's report, a matrix's published report, the index.

A page is the markdown report's layout in HTML, built from the same values (bench.report.tables'
section frames, bench.report.marks' legend, bench.report.markdown's spec and notes), with a chart per
section and the record behind every cell one click away. Its data is inside it (a browser does not
let a page read a JSON file beside it from file://); only plotly.js, site.js and site.css are beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

import pandas as pd

from bench.matrix import Matrix, Section
from bench.metrics import METRICS, Entry
from bench.publish.charts import speed_chart
from bench.publish.html import Link, frame_html, json_script, text_html
from bench.publish.sweeps import TALLY, Sweep, date_text
from bench.report.markdown import provenance, spec_frame
from bench.report.marks import legend
from bench.report.plots import row_label, varying_fields
from bench.report.tables import Added, row_records, section_frame, table_columns

SPEED = METRICS["samples_per_s"]


class Book:
    """The records a page carries, numbered in the order added; a button or a chart mark opens one by number."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def add(self, record: dict | None) -> int | None:
        if record is None:
            return None
        self.records.append(record)
        return len(self.records) - 1


class Page:
    """One page being built: its body's parts, its records and its charts."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []
        self.book = Book()
        self.figures: dict[str, dict] = {}

    def add(self, *parts: str) -> None:
        self.parts += [part for part in parts if part]

    def chart(self, figure: dict) -> None:
        key = f"chart-{len(self.figures) + 1}"
        self.figures[key] = figure
        self.add(f'<div class="chart" id="{key}" data-figure="{key}"></div>')

    def html(self) -> str:
        return "\n".join([
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(self.title)}</title>",
            '<link rel="stylesheet" href="site.css">',
            "</head>",
            "<body>",
            '<nav><a href="index.html">All sweeps</a></nav>',
            "<main>",
            *self.parts,
            "</main>",
            '<dialog id="record-dialog"><form method="dialog"><button class="close">Close</button></form>'
            '<h3 id="record-title"></h3><pre id="record-text"></pre></dialog>',
            json_script("records", self.book.records),
            json_script("figures", self.figures),
            '<script src="plotly.min.js"></script>',
            '<script src="site.js"></script>',
            "</body>",
            "</html>",
        ])  # fmt: skip


def paragraph(text: str, cls: str = "") -> str:
    if not text.strip():
        return ""
    return f'<p class="{cls}">{text_html(text)}</p>' if cls else f"<p>{text_html(text)}</p>"


def report_parts(
    page: Page,
    matrix: Matrix,
    latest: dict[str, dict],
    env: dict | None,
    *,
    notes: Sequence[str] = (),
    as_published: bool = False,
    added: Sequence[Added] = (),
    source: str | None = None,
) -> None:
    """The markdown report's layout: blurb, server spec, numbered notes, then a table, legend and chart per section."""
    report = matrix.report
    notes = [*report.get("notes", []), *notes, *(extra.note for extra in added), source or provenance(matrix, latest)]
    page.add(
        paragraph(report.get("blurb", ""), "blurb"),
        "<h2>Test Server Spec</h2>",
        frame_html(spec_frame(env, report.get("spec", {})), sortable=False),
        paragraph(report.get("spec_note", "")),
        f"<h2>{escape(report['heading'])}</h2>" if report.get("heading") else "",
        paragraph(report.get("intro", "")),
        "<ol class='notes'>" + "".join(f"<li>{text_html(note)}</li>" for note in notes) + "</ol>",
    )
    for section in matrix.sections:
        section_parts(page, section, latest, as_published=as_published, added=added)


def section_parts(
    page: Page, section: Section, latest: dict[str, dict], *, as_published: bool, added: Sequence[Added]
) -> None:
    """One section: its table of entries (a record button per row), the legend under it, its chart."""
    frame = section_frame(section, latest, as_published=as_published, added=added)
    records = row_records(section, latest, as_published=as_published)
    columns = table_columns(section, as_published=as_published)
    numbers = [page.book.add(record) for record in records]
    buttons = [[("record", n, f"the record of row {i}")] if n is not None else [] for i, n in enumerate(numbers, 1)]
    page.add(
        f"<section><h3>{escape(section.title)}</h3>" if section.title else "<section>",
        paragraph(section.text),
        frame_html(frame, records=records, fields={c.header: c.field for c in columns}, buttons=buttons),
        paragraph(legend(frame.to_numpy().ravel(), records), "legend"),
    )
    varying = varying_fields(section)
    labels = [f"{i}. {row_label(row, varying)}" for i, row in enumerate(section.rows, start=1)]
    entries = [SPEED.read(row, record) for row, record in zip(section.rows, records)]
    cells = [row.cell for row in section.rows]
    predicted = {
        header: values
        for extra in added
        for header, values in extra.entries(cells, records).items()
        if all(e.format == "speed" for e in values)
    }
    name = "published samples/sec" if as_published else "samples/sec"
    page.chart(speed_chart(section.title or name, labels, entries, numbers, predicted, name=name))
    page.add("</section>")


def sweep_page(sweep: Sweep, machines_href: str | None = None) -> Page:
    """The report of one results folder, with a link to the same matrix on other machines."""
    page = Page(f"{sweep.matrix.report.get('title') or sweep.matrix.name}: {sweep.machine}")
    page.add(f"<h1>{escape(sweep.matrix.report.get('title') or sweep.matrix.name)}</h1>")
    tally = ", ".join(f"{count} {name}" for name, count in sweep.tally().items() if name != "Cells" and count)
    page.add(
        f'<p class="meta">{escape(str(sweep.folder))} · {escape(sweep.machine)} · {date_text(sweep.started)} · '
        f"{sweep.tally()['Cells']} cells ({escape(tally or 'none run yet')})</p>"
    )
    if warning := sweep.results.warning():
        page.add(f'<p class="warning">Damaged records: {escape(warning)}. The tables show the whole records only.</p>')
    if machines_href:
        page.add(f'<p><a href="{escape(machines_href)}">This matrix on other machines, side by side</a></p>')
    report_parts(page, sweep.matrix, sweep.latest, sweep.env, notes=sweep.notes, added=sweep.added)
    return page


def published_page(matrix: Matrix, records: dict[str, dict], added: Sequence[Added], source: str) -> Page:
    """A matrix's published report from the matrix alone (matrix: with the published server's spec)."""
    page = Page(f"{matrix.report.get('title') or matrix.name} (published)")
    page.add(f"<h1>{escape(matrix.report.get('title') or matrix.name)}</h1>", paragraph(source, "meta"))
    report_parts(page, matrix, records, None, as_published=True, added=added, source=source)
    return page


def index_page(rows: list[dict[str, Any]], machines: dict[str, str], serve_line: str) -> Page:
    """The list of sweeps (matrix, machine, date, cells, how many ok, Fail, NaN, Error), and the pages across machines."""
    page = Page("pfcbench results")
    page.add("<h1>pfcbench results</h1>", paragraph(serve_line, "meta"))
    if rows:
        page.add("<h2>Sweeps</h2>", frame_html(pd.DataFrame(rows)))
    if machines:
        links = "".join(f'<li><a href="{escape(href)}">{escape(name)}</a></li>' for name, href in machines.items())
        page.add("<h2>Across machines</h2>", f"<ul>{links}</ul>")
    return page


def index_row(href: str, sweep: Sweep) -> dict[str, Any]:
    tally = sweep.tally()
    return {
        "Matrix": Link(href, sweep.matrix.name),
        "Machine": sweep.machine,
        "Results": str(sweep.folder),
        "Date": date_text(sweep.started),
        **{name: Entry(tally[name], format="int") for name in ("Cells", *TALLY)},
    }


def published_index_row(href: str, matrix: Matrix, records: dict[str, dict]) -> dict[str, Any]:
    statuses = [r["status"] for r in records.values()]
    counts = {"Cells": len(matrix.cells()), "ok": statuses.count("ok"), "Fail": statuses.count("oom")}
    return {
        "Matrix": Link(href, matrix.name),
        "Machine": "published",
        "Results": "(no run: the matrix's published figures)",
        "Date": "—",
        **{name: Entry(counts.get(name, 0), format="int") for name in ("Cells", *TALLY)},
    }
