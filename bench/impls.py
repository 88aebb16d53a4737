"""The registry of classifier implementations a cell can time: impl name -> the module that defines it.

This module does not import torch, so that the parent (config, plan, report) can list the names.
Each module named here defines IMPL, a bench.workload.impl.Impl (its step and its classifier);
`load_impl` imports it, inside a rank or a memory trace only.
"""

from __future__ import annotations

import importlib
from typing import Any

IMPL_MODULES = {
    "arcface_torch": "bench.workload.partial_fc",
    "arcface_torch_2021": "bench.workload.step_2021",
    "arcface_torch_2022": "bench.workload.partial_fc_2022",
    "fused": "bench.workload.fused",
}
"""impl name -> module defining its IMPL: arcface_torch's train_v2 with PartialFC_V2, its August 2021
train.py with Partial FC v1, its January 2022 train.py with the autograd Partial FC over the same
memory bank, and train_v2 with pfcbench's fused classifier."""

IMPLS = tuple(IMPL_MODULES)
"""The impl names, in the order they are listed."""


def load_impl(name: str) -> Any:
    """The registered Impl of name (imports its module, and torch with it)."""
    if name not in IMPL_MODULES:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, not {name!r}")
    return importlib.import_module(IMPL_MODULES[name]).IMPL
