"""A page's charts as plotly figures (plain dicts, drawn by the plotly.js the site carries): one mark per cell.

A cell with a training speed is a bar; one without (Fail, NaN, Error, ...) is a red cross at zero that
names its mark, so that no cell a table shows is missing from its chart. Hovering a mark shows the
cell and its figure; clicking it opens the record behind it (site.js, from customdata). The time model's
prediction, where a page has one, is a diamond beside the bar.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.metrics import Entry

CELL, PREDICTED = "cell", "predicted"
"""A trace's meta: the marks of cells (one per cell a table shows), or a prediction beside them."""

NO_FIGURE_COLOUR = "#c0392b"
ROW_PX = 26


def speed_chart(
    title: str,
    labels: Sequence[str],
    entries: Sequence[Entry],
    record_numbers: Sequence[int | None],
    predicted: dict[str, Sequence[Entry]] | None = None,
    *,
    name: str = "samples/sec",
) -> dict:
    """Samples/sec of each row: labels name the rows (unique), entries are their samples/sec entries."""
    traces = cell_traces(name, labels, entries, record_numbers)
    for header, values in (predicted or {}).items():
        shown = [(label, entry.value) for label, entry in zip(labels, values) if entry.value is not None]
        if shown:
            traces.append({
                "type": "scatter", "mode": "markers", "name": header, "meta": PREDICTED,
                "y": [label for label, _ in shown], "x": [value for _, value in shown],
                "marker": {"symbol": "diamond", "size": 9, "color": "#e67e22"},
                "hovertemplate": f"%{{y}}<br>{header}: %{{x:,.0f}} samples/sec<extra></extra>",
            })  # fmt: skip
    return figure(title, traces, len(labels), labels)


def machines_chart(
    title: str, labels: Sequence[str], machines: dict[str, tuple[Sequence[Entry | None], Sequence[int | None]]]
) -> dict:
    """Samples/sec of each row on each machine (machine name: its entries, None where it lacks the cell)."""
    traces = []
    for number, (name, (entries, records)) in enumerate(machines.items()):
        kept = [(label, e, r) for label, e, r in zip(labels, entries, records) if e is not None]
        traces += cell_traces(
            name, [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept], colour=PALETTE[number % 10]
        )
    layout = figure(title, traces, len(labels) * max(1, len(machines)), labels)
    layout["layout"]["barmode"] = "group"
    return layout


def history_chart(title: str, series: dict[str, tuple[Sequence[str], Sequence[Entry], Sequence[int]]]) -> dict:
    """Each cell's samples/sec over the dates of its records (cell label: dates, entries, record numbers)."""
    traces = []
    for label, (dates, entries, records) in series.items():
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": label, "meta": CELL,
            "x": list(dates), "y": [e.value for e in entries], "text": [e.text() for e in entries],
            "customdata": list(records),
            "hovertemplate": f"{label}<br>%{{x}}<br>samples/sec: %{{text}}<extra></extra>",
        })  # fmt: skip
    chart = figure(title, traces, 12)
    chart["layout"]["yaxis"] = {"title": {"text": "samples/sec"}, "rangemode": "tozero"}
    chart["layout"]["xaxis"] = {"type": "date"}
    return chart


PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f", "#bcbd22", "#e377c2", "#ff7f0e", "#d62728")


def cell_traces(
    name: str,
    labels: Sequence[str],
    entries: Sequence[Entry],
    record_numbers: Sequence[int | None],
    colour: str = PALETTE[0],
) -> list[dict]:
    """A bar per row with a figure, and a cross at zero naming the mark of each row without one."""
    rows = list(zip(labels, entries, record_numbers))
    measured = [row for row in rows if row[1].value is not None]
    missing = [row for row in rows if row[1].value is None]
    traces = []
    if measured:
        traces.append({
            "type": "bar", "orientation": "h", "name": name, "meta": CELL,
            "y": [r[0] for r in measured], "x": [r[1].value for r in measured],
            "text": [r[1].text() for r in measured], "textposition": "none",
            "customdata": [r[2] for r in measured], "marker": {"color": colour},
            "hovertemplate": f"%{{y}}<br>{name}: %{{text}}<extra></extra>",
        })  # fmt: skip
    if missing:
        traces.append({
            "type": "scatter", "mode": "markers+text", "name": f"{name}: no figure", "meta": CELL,
            "y": [r[0] for r in missing], "x": [0] * len(missing),
            "text": [r[1].text() for r in missing], "textposition": "middle right",
            "customdata": [r[2] for r in missing],
            "marker": {"symbol": "x", "size": 10, "color": NO_FIGURE_COLOUR},
            "textfont": {"color": NO_FIGURE_COLOUR},
            "hovertemplate": f"%{{y}}<br>{name}: %{{text}}<extra></extra>",
        })  # fmt: skip
    return traces


def figure(title: str, traces: list[dict], num_rows: int, labels: Sequence[str] = ()) -> dict:
    """A figure of the traces, its rows (labels) in the table's order, whichever trace marks them."""
    return {
        "data": traces,
        "layout": {
            "title": {"text": title, "font": {"size": 14}, "x": 0, "xanchor": "left"},
            "height": 120 + ROW_PX * num_rows,
            "margin": {"l": 10, "r": 20, "t": 40, "b": 40},
            "xaxis": {"title": {"text": "samples/sec"}, "rangemode": "tozero"},
            "yaxis": {
                "automargin": True,
                "autorange": "reversed",
                "type": "category",
                "categoryorder": "array",
                "categoryarray": list(labels),
            },
            "hovermode": "closest",
        },
    }
