"""The memory trace leans on private torch names: a torch that drops one fails here, naming it."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import torch

from bench.workload import private_torch


def test_this_torch_has_every_private_name_the_memory_trace_uses():
    missing = private_torch.missing_private_names()
    assert not missing, f"torch {torch.__version__} lacks {', '.join(missing)}, which bench.workload.memtrace uses"
    importlib.import_module("bench.workload.memtrace")


def test_every_private_torch_name_the_memory_trace_imports_is_listed():
    source = Path(private_torch.__file__).with_name("memtrace.py").read_text()
    imported = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch"):
            imported += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names if alias.name.startswith("torch")]
    private = {name for name in imported if "._" in name}
    assert "torch.testing._internal.distributed.fake_pg.FakeStore" in private
    unlisted = sorted(private - set(private_torch.PRIVATE_TORCH_NAMES))
    assert not unlisted, f"bench.workload.memtrace imports {', '.join(unlisted)}, which PRIVATE_TORCH_NAMES lacks"


def test_a_missing_name_is_named(monkeypatch):
    assert not private_torch.resolves("torch.distributed._tools.mem_tracker.MemTracker._no_such_method")
    assert not private_torch.resolves("torch._no_such_module.thing")
    assert private_torch.resolves("torch.distributed._tools.mem_tracker._MemRefType")
    names = (*private_torch.PRIVATE_TORCH_NAMES, "torch._no_such_module.thing")
    monkeypatch.setattr(private_torch, "PRIVATE_TORCH_NAMES", names)
    assert "torch._no_such_module.thing" in private_torch.missing_private_names()
