"""What a site shows across sweeps: the same matrix's machines side by side, and one machine's runs in time.

The table across machines is `report A B`'s (bench.report.machines), with its notes; the history of a
cell is its records on one machine, oldest first, with what `pfcbench compare` says between the last
two (bench.report.compare, at its default threshold and significance).
"""

from __future__ import annotations

from html import escape

import pandas as pd

from bench.metrics import EMULATED, Entry, speed_entry
from bench.publish.charts import history_chart, machines_chart
from bench.publish.html import frame_html
from bench.publish.pages import Page, paragraph
from bench.publish.sweeps import Sweep, date_text, histories, iso_date, record_time
from bench.report.compare import compare_cell
from bench.report.fields import cell_label
from bench.report.machines import machines_frame, machines_listing, machines_notes, read_machines, row_fields

THRESHOLD, ALPHA = 0.05, 0.01
"""compare's defaults: the smallest change of samples/sec that counts, and the U test's significance level."""


def machines_page(matrix_name: str, sweeps: list[Sweep]) -> Page:
    """The newest sweep of each machine that ran the matrix, as one table with a column per machine, and its chart."""
    machines = read_machines([sweep.folder for sweep in sweeps])
    frame = machines_frame(machines)
    cells = list({c.cell_id: c for m in machines for c in m.cells}.values())
    fields = row_fields(cells)
    labels = [f"{i}. {cell_label(c, fields)}" for i, c in enumerate(cells, start=1)]
    page = Page(f"{matrix_name} across machines")
    series, buttons = {}, [[] for _ in cells]
    for number, machine in enumerate(machines, start=1):
        records = [machine.latest.get(cell.cell_id) for cell in cells]
        numbers = [page.book.add(record) for record in records]
        entries = [speed_entry(r, after=(EMULATED,)) if r is not None else None for r in records]
        series[machine.name] = (entries, numbers)
        for row, record_number in zip(buttons, numbers):
            if record_number is not None:
                row.append((str(number), record_number, f"the record on {machine.name}"))
    page.add(
        f"<h1>{escape(matrix_name)}: samples/sec across machines</h1>",
        frame_html(machines_listing(machines).rename(index=lambda i: i + 1).reset_index(names="#"), sortable=False),
        frame_html(frame, buttons=buttons),
        *(paragraph(note, "legend") for note in machines_notes(machines, frame)),
    )
    page.chart(machines_chart(f"{matrix_name}: samples/sec across machines", labels, series))
    return page


def history_parts(page: Page, runs: list[Sweep]) -> None:
    """The history of each cell with more than one record on this machine, and compare's verdict on the last two;
    nothing where no cell has two."""
    found = histories(runs)
    if not found:
        return
    rows, buttons, series = [], [], {}
    for history in found:
        numbers = [page.book.add(record) for record in history.records]
        entries = [speed_entry(record, after=(EMULATED,)) for record in history.records]
        before, last = history.records[-2:]
        verdict = compare_cell(before, last, THRESHOLD, ALPHA)
        rows.append({
            "Cell": history.label,
            "Records": Entry(len(history.records), format="int"),
            "Before": entries[-2],
            "Before, started": date_text(record_time(before)),
            "Last": entries[-1],
            "Last, started": date_text(record_time(last)),
            "Ratio": Entry(verdict.ratio, format="ratio"),
            "Verdict": f"{verdict.verdict} ({verdict.why})" if verdict.why else verdict.verdict,
        })  # fmt: skip
        buttons.append(
            [(str(i), n, date_text(record_time(r))) for i, (n, r) in enumerate(zip(numbers, history.records), 1)]
        )
        dates = [iso_date(record_time(r)) for r in history.records]
        series[history.label] = (dates, entries, numbers)
    folders = ", ".join(dict.fromkeys(str(run.folder) for run in runs))
    text = (
        f"Each cell with more than one record on this machine ({folders}), oldest first. Verdict: what pfcbench "
        f"compare says between its last two records: a change is called when samples/sec moved by more than "
        f"{THRESHOLD:.0%} and a Mann-Whitney U test on the step times agrees at {ALPHA}."
    )
    page.add(
        '<section id="history"><h2>History</h2>',
        paragraph(text, "legend"),
        frame_html(pd.DataFrame(rows), buttons=buttons),
    )
    page.chart(history_chart("samples/sec over time", series))
    page.add("</section>")
