"""The training step that one benchmark cell times: backbone, margin, Partial FC, optimizer.

Importing this package loads none of its modules, so that the parent's torch-free readers of record
files (recordio, faces) import without torch; a name below is loaded from its module when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

LAZY = {
    "build_classifier": "classifiers",
    "FusedPartialFC": "fused",
    "CombinedMarginLoss": "margin",
    "PartialFC": "partial_fc",
}
"""Names the package offers, and the module each lives in."""

__all__ = sorted(LAZY)


def __getattr__(name: str) -> Any:
    if name not in LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{LAZY[name]}"), name)
