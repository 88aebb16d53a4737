"""Tables of entries as HTML: the one place an entry's value and marks become a page's text.

A table is pandas' `to_html` of a frame whose cells are already HTML: each entry a span holding its
value (`data-value`, a number where it is one, so that the page sorts numbers as numbers), its marks
as labels whose title explains them, and the published figure and the ratio toned by how far the
ratio is from 1. JSON that a page carries goes in a script element, escaped for it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import pandas as pd

from bench.metrics import (
    BOTH_FAIL,
    FAIL,
    LOADER_BOUND,
    MEASURED_FAIL,
    NAN,
    PUBLISHED_FAIL,
    Entry,
    Mark,
)
from bench.numbers import is_number
from bench.verdicts import legend_lines, nonfinite_lines, outlier_ranks

NEAR, OFF = 0.10, 0.25
"""A ratio within NEAR of 1 reads as near the published figure, within OFF as off, else as far off."""

FAR_OFF_RANK = Mark("far-off rank")
"""After the samples/sec of a cell one of whose ranks was far from the others (bench.verdicts.outlier_ranks)."""

FAIL_MEANING = "out of memory (the published reports' word)"


def tone(ratio: Entry | None) -> str:
    """How far a row's measured figure is from its published one: near, off, far, or "" where there is no ratio."""
    if ratio is None:
        return ""
    if ratio.marks:
        return (
            "near" if BOTH_FAIL in ratio.marks else "far" if {MEASURED_FAIL, PUBLISHED_FAIL} & set(ratio.marks) else ""
        )
    if not is_number(ratio.value) or ratio.value <= 0:
        return ""
    off = abs(math.log(ratio.value))
    return "near" if off <= math.log1p(NEAR) else "off" if off <= math.log1p(OFF) else "far"


def explanation(mark: Mark, record: dict | None) -> str:
    """What a mark means, for the label's title: the legend's own line for it."""
    if mark == FAIL:
        return FAIL_MEANING
    if mark == NAN:
        return " ".join(nonfinite_lines([record])) or "the loss was not finite"
    if mark in (LOADER_BOUND, FAR_OFF_RANK):
        start = LOADER_BOUND.text if mark == LOADER_BOUND else "Ranks far"
        return next((line for line in legend_lines([record]) if line.startswith(start)), mark.text)
    return mark.meaning or mark.text


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "mark"


def mark_html(mark: Mark, record: dict | None) -> str:
    title = escape(explanation(mark, record))
    return f'<span class="mark mark-{slug(mark.text)}" title="{title}">{escape(mark.text)}</span>'


@dataclass(frozen=True)
class Link:
    """A table cell that links to another page of the site."""

    href: str
    text: str


def entry_html(value: Any, record: dict | None = None, *, extra: Sequence[Mark] = (), toned: str = "") -> str:
    """One table cell: an entry's value (sortable by data-value) and its marks as labels; a link; other values as text."""
    if isinstance(value, Link):
        return f'<a href="{escape(value.href)}" data-value="{escape(value.text)}">{escape(value.text)}</a>'
    if not isinstance(value, Entry):
        text = "" if value is None else str(value)
        return f'<span data-value="{escape(text)}">{escape(text)}</span>'
    if value.label is not None:
        return f'<span data-value="{escape(value.label)}">{escape(value.label)}</span>'
    number = is_number(value.value) and not isinstance(value.value, bool)
    shown = value.value_text()
    sort_key = repr(float(value.value)) if number else shown or (value.marks[0].text if value.marks else "")
    marks = " ".join(mark_html(mark, record) for mark in (*value.marks, *extra))
    kind = "num" if number else "text"
    tone_class = f" tone-{toned}" if toned else ""
    body = " ".join(part for part in (escape(shown), marks) if part)
    return f'<span class="{kind}{tone_class}" data-value="{escape(sort_key)}">{body}</span>'


def frame_html(
    frame: pd.DataFrame,
    *,
    records: Sequence[dict | None] = (),
    fields: dict[str, str] | None = None,
    buttons: Sequence[Sequence[tuple[str, int, str]]] = (),
    sortable: bool = True,
) -> str:
    """A frame of entries as a sortable HTML table.

    records: the record each row shows (its marks' explanations, its far-off ranks); fields: each
    header's metric, where the table has one (the samples/sec column gets the far-off rank label, the
    published and ratio columns their tone); buttons: per row, (label, record number, title) of each
    record its "Record" cell opens.
    """
    fields = fields or {}
    ratio_header = next((h for h, f in fields.items() if f == "ratio"), None)
    cells = []
    for i, (_, row) in enumerate(frame.iterrows()):
        record = records[i] if i < len(records) else None
        toned = tone(row[ratio_header]) if ratio_header else ""
        cells.append({
            header: entry_html(
                value,
                record,
                extra=(FAR_OFF_RANK,) if fields.get(header) == "samples_per_s" and outlier_ranks(record) else (),
                toned=toned if fields.get(header) in ("published", "ratio") else "",
            )
            for header, value in row.items()
        })  # fmt: skip
    shown = pd.DataFrame(cells, columns=list(frame.columns))
    if buttons:
        shown["Record"] = [" ".join(button_html(*b) for b in row) for row in buttons]
    classes = "table sortable" if sortable else "table"
    return shown.to_html(index=False, escape=False, border=0, classes=classes, na_rep="")


def button_html(label: str, number: int, title: str) -> str:
    return (
        f'<button type="button" class="record" data-record="{number}" title="{escape(title)}">{escape(label)}</button>'
    )


LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")
"""A markdown link in a matrix's text (the A100 report's blurb names the card's page)."""


def text_html(text: str) -> str:
    """A matrix's text (a blurb, a note) as HTML: escaped, its markdown links made links (followed only when clicked)."""
    return LINK.sub(lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', escape(text.strip()))


def plain(value: Any) -> Any:
    """A value made JSON: a float that is not finite as its text ("NaN"), which JSON has no number for."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def json_script(element_id: str, value: Any) -> str:
    """Data a page carries: JSON in a script element that no text inside it can close."""
    text = json.dumps(plain(value), allow_nan=False, default=str).replace("<", "\\u003c")
    return f'<script type="application/json" id="{element_id}">{text}</script>'
