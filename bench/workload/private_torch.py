"""The private torch names the memory trace (bench.workload.memtrace) uses, and which of them a torch lacks.

Importing this module imports no torch, so that a torch that lacks one of the names is told which,
where importing the trace itself stops at its first missing name.
"""

from __future__ import annotations

import importlib

PRIVATE_TORCH_NAMES = (
    "torch.testing._internal.distributed.fake_pg.FakeStore",
    "torch._subclasses.fake_tensor.DataDependentOutputException",
    "torch._subclasses.fake_tensor.DynamicOutputShapeException",
    "torch._subclasses.fake_tensor.FakeTensor",
    "torch._subclasses.fake_tensor.FakeTensorMode",
    "torch._subclasses.fake_tensor.FakeTensorMode.in_kernel_invocation",
    "torch._subclasses.fake_tensor.FakeTensor.fake_device",
    "torch._subclasses.fake_tensor.FakeTensorConverter.from_meta_and_device",
    "torch._subclasses.fake_tensor.unset_fake_temporarily",
    "torch.distributed._tools.mem_tracker.MemTracker",
    "torch.distributed._tools.mem_tracker.MemTracker._track",
    "torch.distributed._tools.mem_tracker.MemTracker._update_and_maybe_create_winfos",
    "torch.distributed._tools.mem_tracker.MemTracker._update_snap",
    "torch.distributed._tools.mem_tracker.MemTracker._track_module_params_and_buffers",
    "torch.distributed._tools.mem_tracker.MemTracker._pre_fw_hook",
    "torch.distributed._tools.mem_tracker.MemTracker._post_fw_hook",
    "torch.distributed._tools.mem_tracker.MemTracker._pre_bw_hook",
    "torch.distributed._tools.mem_tracker.MemTracker._post_bw_hook",
    "torch.distributed._tools.mem_tracker._ModMemStats",
    "torch.distributed._tools.mem_tracker.MemTracker.reset_mod_stats",
    "torch.distributed._tools.mem_tracker._MemRefType",
    "torch.distributed._tools.mem_tracker._UpdateType",
    "torch.utils._python_dispatch.TorchDispatchMode",
    "torch.utils._pytree.tree_flatten",
    "torch.utils._pytree.tree_leaves",
    "torch.utils._pytree.tree_map_only",
    "torch.optim.sgd._default_to_fused_or_foreach",
    "torch.nn.utils.clip_grad._has_foreach_support",
    "torch.ops.aten._local_scalar_dense.default._schema",
)
"""The private torch names the trace uses (pyproject pins the torch versions that have them)."""

PRIVATE_MEMTRACKER_ATTRIBUTES = (
    "_mod_tracker",
    "_param_to_grad_hook_handles",
    "memory_tracking",
    "_in_opt",
    "_in_ac",
    "_ac_mod",
)
"""Attributes of a MemTracker instance the trace reads."""

PRIVATE_FAKE_MODE_ATTRIBUTES = ("fake_tensor_converter",)
"""Attributes of a FakeTensorMode instance the trace reads."""


def missing_private_names() -> list[str]:
    """The names of PRIVATE_TORCH_NAMES, PRIVATE_MEMTRACKER_ATTRIBUTES and PRIVATE_FAKE_MODE_ATTRIBUTES this
    torch lacks."""
    missing = [name for name in PRIVATE_TORCH_NAMES if not resolves(name)]
    if "torch.distributed._tools.mem_tracker.MemTracker" in missing:
        return missing  # no instance to look at
    tracker = importlib.import_module("torch.distributed._tools.mem_tracker").MemTracker()
    missing += [f"MemTracker().{name}" for name in PRIVATE_MEMTRACKER_ATTRIBUTES if not hasattr(tracker, name)]
    if "torch._subclasses.fake_tensor.FakeTensorMode" not in missing:
        mode = importlib.import_module("torch._subclasses.fake_tensor").FakeTensorMode()
        missing += [f"FakeTensorMode().{name}" for name in PRIVATE_FAKE_MODE_ATTRIBUTES if not hasattr(mode, name)]
    return missing


def resolves(name: str) -> bool:
    """Whether a dotted name is there: the longest importable module, then attributes."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False
