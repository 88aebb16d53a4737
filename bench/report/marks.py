"""The marks a report prints in place of, or beside, a figure: Fail, Error, ~2190, (emulated), and what each means."""

from __future__ import annotations

from bench.results import is_ok

NOT_RUN = "Not run"
MARKS = {"oom": "Fail", "error": "Error", "timeout": "Timeout", "skipped": "Skipped", "not_run": NOT_RUN, None: "—"}
"""What a cell that did not finish prints instead of its samples/sec; None is a cell not run yet,
"not_run" a published row pfcbench does not run (the matrix says why)."""

EMULATED = " (emulated)"
"""After the samples/sec of an emulated cell, which is an estimate: rank 0 alone, no communication."""


def mark(record: dict | None) -> str:
    """The printed mark of a cell that has no samples/sec: Fail, Error, Timeout, Skipped or —."""
    return MARKS.get(record["status"] if record else None, "Error")


def speed_text(record: dict | None) -> str:
    """Samples/sec as the published reports print it (~2190), or the cell's mark."""
    return f"~{round(record['samples_per_s'])}{emulated_mark(record)}" if is_ok(record) else mark(record)


def emulated_mark(record: dict | None) -> str:
    return EMULATED if record and record.get("config", {}).get("emulated") else ""


LEGEND = {
    "Error": "the job failed for a reason other than memory (see the record's error in results.jsonl)",
    "Timeout": "the job was stopped at the wall-clock or inactivity limit",
    "Skipped": "not run",
    "—": "not run yet",
    NOT_RUN: "a published row pfcbench does not run, shown with its published figures",
    EMULATED.strip(): "only rank 0 of the cell's ranks ran, alone on one device, fed made-up embeddings of the "
    "others: its memory is rank 0's, its samples/sec an estimate without communication",
}
"""Explanation printed under a table for each mark in it; "Fail" (out of memory) is the published convention."""
