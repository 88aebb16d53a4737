"""The marks a report prints in place of, or beside, a figure: Fail, Error, ~2190, (emulated), and what each means."""

from __future__ import annotations

from bench.store.results import is_ok
from bench.verdicts import NONFINITE, nonfinite, training_speed

NOT_RUN = "Not run"
MARKS = {"oom": "Fail", "error": "Error", "timeout": "Timeout", "skipped": "Skipped", "not_run": NOT_RUN, None: "—"}
"""What a cell that did not finish prints instead of its samples/sec; None is a cell not run yet,
"not_run" a published row pfcbench does not run (the matrix says why)."""

NO_SPEED = "no speed"
"""An ok record without a usable samples/sec (a damaged or hand-made record)."""

EMULATED = " (emulated)"
"""After the samples/sec of an emulated cell, which is an estimate: rank 0 alone, no communication."""


def mark(record: dict | None) -> str:
    """The printed mark of a cell that has no samples/sec: Fail, Error, Timeout, Skipped or —."""
    return MARKS.get(record["status"] if record else None, "Error")


def speed_text(record: dict | None) -> str:
    """Samples/sec as the published reports print it (~2190); else NaN, "no speed" or the cell's mark."""
    speed = training_speed(record)
    if speed is not None:
        return f"~{round(speed)}{emulated_mark(record)}"
    if is_ok(record):
        return NONFINITE if nonfinite(record) else NO_SPEED
    return mark(record)


def emulated_mark(record: dict | None) -> str:
    return EMULATED if record and record.get("config", {}).get("emulated") else ""


LEGEND = {
    "Error": "the job failed for a reason other than memory (see the record's error in results.jsonl)",
    "Timeout": "the job was stopped at the wall-clock or inactivity limit",
    "Skipped": "not run",
    "—": "not run yet",
    NOT_RUN: "a published row pfcbench does not run, shown with its published figures",
    NO_SPEED: "the record is ok but holds no usable samples/sec (a damaged or hand-edited record)",
    EMULATED.strip(): "only rank 0 of the cell's ranks ran, alone on one device, fed made-up embeddings of the "
    "others: its memory is rank 0's, its samples/sec an estimate without communication",
}
"""Explanation printed under a table for each mark in it; "Fail" (out of memory) is the published convention."""
