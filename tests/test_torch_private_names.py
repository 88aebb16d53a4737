"""The memory trace leans on private torch names: a torch that drops one fails here, naming it."""

from __future__ import annotations

import pytest


def test_every_private_torch_name_the_memory_trace_uses_exists():
    try:
        from bench.workload import memtrace
    except ImportError as exc:
        pytest.fail(f"the memory trace cannot import a private torch name: {exc}", pytrace=False)
    missing = memtrace.missing_private_names()
    assert not missing, f"this torch lacks {', '.join(missing)}, which bench.workload.memtrace uses"


def test_a_missing_name_is_named():
    from bench.workload import memtrace

    assert not memtrace.resolves("torch.distributed._tools.mem_tracker.MemTracker._no_such_method")
    assert not memtrace.resolves("torch._no_such_module.thing")
    assert memtrace.resolves("torch.distributed._tools.mem_tracker._MemRefType")
