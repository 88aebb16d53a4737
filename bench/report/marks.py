"""The marks of a table's entries read back for the lines under it, and the one-line texts that say a speed.

The marks themselves (Fail, Error, "(emulated)", ...) are bench.metrics'; a legend is made from the
marks a table's entries carry, never from their text.
"""

from __future__ import annotations

from collections.abc import Iterable

from bench.metrics import (
    EMULATED,
    ERROR,
    NO_SPEED,
    NOT_RUN,
    NOT_YET,
    SKIPPED,
    TIMEOUT,
    Entry,
    Mark,
    is_emulated,
    speed_entry,
)
from bench.verdicts import legend_lines

LEGEND = (ERROR, TIMEOUT, SKIPPED, NOT_YET, NOT_RUN, NO_SPEED, EMULATED)
"""The marks a legend explains, in its order; Fail (out of memory) is the published convention, and NaN and
"(loader-bound)" are explained by bench.verdicts.legend_lines."""


def speed_text(record: dict | None) -> str:
    """Samples/sec as a one-line output prints it (~2190 (emulated)); else NaN, "no speed" or the cell's mark."""
    return speed_entry(record, after=(EMULATED,)).text()


def emulated_mark(record: dict | None) -> str:
    """ " (emulated)" after the samples/sec of an emulated cell's line, else nothing."""
    return f" {EMULATED.text}" if is_emulated(record) else ""


def legend(entries: Iterable[Entry], records: list[dict | None]) -> str:
    """One line explaining each mark the entries show, with the reasons cells were skipped or not run.

    An emulated cell is explained wherever a table shows one, with or without its samples/sec.
    """
    shown: set[Mark] = {mark for entry in entries for mark in entry.shown_marks}
    if any(is_emulated(record) for record in records):
        shown.add(EMULATED)
    skipped = list(dict.fromkeys(r["reason"] for r in records if r and r["status"] == "skipped" and r.get("reason")))
    not_run = list(dict.fromkeys(r["not_run"] for r in records if r and r.get("not_run")))
    if not_run:
        shown.add(NOT_RUN)
    details = {SKIPPED: skipped, NOT_RUN: not_run}
    parts = []
    for mark in LEGEND:
        if mark in shown:
            detail = f" ({'; '.join(details[mark])})" if details.get(mark) else ""
            parts.append(f"{mark.text}: {mark.meaning}{detail}.")
    return " ".join(parts + legend_lines(records))
