"""Which cell fields tell rows apart, and how a value reads in a table, a plot label or a progress line.

A table or line names a few fields always (backbone, classes, batch, precision, ...); two cells that
differ only in another one (tf32, records against synthetic data, a memory cap) would read the same.
The outputs ask `varying_fields` which fields vary among the cells they show, and name those too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from typing import Any

from bench.config import Cell

FIELDS = tuple(f.name for f in dataclasses.fields(Cell))
DEFAULTS = {f.name: f.default for f in dataclasses.fields(Cell)}

SAID_BY_RANKS = ("nproc_per_node",)
"""Given by a row's ranks (world size) together with nnodes, which is named where it varies."""

NONE_TEXTS = {"max_memory_gib": "no cap"}
"""What a field left at None means, where None is a setting (max_memory_gib: no memory cap per rank)."""


def varying_fields(cells: Iterable[Cell], *, besides: Collection[str] = ()) -> list[str]:
    """The cell fields, in the cell's order, that take more than one value among the cells, less those besides."""
    cells = list(cells)
    return [name for name in FIELDS if name not in besides and len({getattr(c, name) for c in cells}) > 1]


def field_text(name: str, value: Any) -> str:
    """A field's value as a reader takes it: "no cap" for no memory cap, on or off for a switch."""
    if value is None:
        return NONE_TEXTS.get(name, "none")
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value) if value != "" else "none"


def field_label(name: str, value: Any) -> str:
    """A field as a plot labels a row: "tf32 on", "max_memory_gib no cap"."""
    return f"{name} {field_text(name, value)}"


def cell_label(cell: Cell, fields: Iterable[str]) -> str:
    """A cell as a plot labels its row: each of the fields labelled, "classes 1000, tf32 on"."""
    return ", ".join(field_label(name, getattr(cell, name)) for name in fields)


def field_words(name: str, value: Any) -> str:
    """A field as a progress line says it where it is not at the cell's default (there: nothing), so that
    of two cells told apart by it at least one says it: "tf32", "records", "constant labels"."""
    if value == DEFAULTS[name]:
        return ""
    if isinstance(value, bool):
        return name if value else f"no {name}"
    if name in ("data", "impl", "margin", "device"):
        return str(value)
    if name == "label_mode":
        return f"{value} labels"
    if name == "max_memory_gib":
        return f"capped at {value:g} GiB"
    return field_label(name, value)
