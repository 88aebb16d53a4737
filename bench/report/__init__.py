"""The report of a matrix run: result records -> markdown in the arcface_torch layout, PNG plots, flat exports.

`render_markdown` (markdown) follows insightface's published speed reports; `write_report` (write)
is what `pfcbench report` runs. The modules: read (a results folder), tables (a section as a table
of values and marks, bench.metrics' entries), marks (the legend read from those marks), markdown
(the only place a table becomes text), plots, write. Importing this package loads none of
them, so that the CLI answers at once; a name is loaded from its module when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

LAZY = {
    "export": "write",
    "write_report": "write",
    "render_markdown": "markdown",
    "read_run": "read",
}
"""Names the package offers, and the module each lives in."""


def __getattr__(name: str) -> Any:
    if name not in LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{LAZY[name]}"), name)
