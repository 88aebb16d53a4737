"""The impls a cell can time, by name, and `load_impl`, which gives an impl's spec inside a rank or a trace.

This module does not import torch, so that the parent (config, plan, report) can list the names. The
specs (step, classifier, cost) are built in bench.workload.registry, which imports torch; `load_impl`
imports it on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bench.config import IMPLS

if TYPE_CHECKING:
    from bench.workload.impl import ImplSpec

__all__ = ["IMPLS", "load_impl"]

REGISTRY = "bench.workload.registry"
"""The module that builds the specs. Named, not imported: its steps import load_impl from here."""


def load_impl(name: str) -> ImplSpec:
    """The spec of impl name (imports the registry, and torch with it)."""
    if name not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, not {name!r}")
    return importlib.import_module(REGISTRY).SPECS[name]
