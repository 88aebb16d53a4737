"""Trace the tensor bytes of a cell's real training step on the CPU, without allocating them.

The step is built and run for two steps under FakeTensorMode (tensors have shapes, no data) with
a fake process group that lets this process play rank 0 of the cell's world size; MemTracker
follows every storage and the peak is split into parts. Small integer-valued tensors (labels,
masks, sampling indices) also run for real beside their fake twins, so that the shapes that
depend on data (how many of the global batch's labels fall into this rank's classes) are the
real ones. The other ranks' contributions to an all-gather are copies of this rank's tensor:
labels drawn from the same distribution, so this rank sees as many positives as in a real job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import weakref
from collections.abc import Iterator
from unittest import mock

# bench.workload.private_torch lists the private torch names imported and used here.
import torch
from torch import distributed
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensor,
    FakeTensorMode,
    unset_fake_temporarily,
)
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType, _ModMemStats, _UpdateType
from torch.nn.utils import clip_grad
from torch.optim import sgd
from torch.testing._internal.distributed.fake_pg import FakeStore  # importing it registers the "fake" backend
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_leaves, tree_map_only

from bench.config import Cell
from bench.memory import ACTIVATIONS, BACKBONE_STATE, CLASSIFIER_STATE, CLASSIFIER_TEMPORARIES, TRACED_PARTS
from bench.workload.allocator import CachingAllocator
from bench.workload.base_step import BaseStep, build_step
from bench.workload.events import NO_BLOCK
from bench.workload.partial_fc import shard_of

SHADOW_MAX_NUMEL = 1 << 24
"""Outputs up to this many elements also run for real when all their inputs have real values."""

NUM_STEPS = 2
"""Steps traced: the second holds the optimizer state that the first creates."""

PERSISTENT = {_MemRefType.PARAM, _MemRefType.BUFFER, _MemRefType.GRAD, _MemRefType.OPT}

INIT_OPS = {
    torch.ops.aten.fill_.Scalar,
    torch.ops.aten.zero_.default,
    torch.ops.aten.uniform_.default,
    torch.ops.aten.normal_.default,
}
"""What initializes the weights of a step being built: in place, no storage made, values the trace never has."""


class RealValues(TorchDispatchMode):
    """Beside FakeTensorMode: run small ops for real too, and answer data-dependent ops with real results."""

    def __init__(self, fake_mode: FakeTensorMode) -> None:
        super().__init__()
        self.fake_mode = fake_mode
        self.real_floats = False
        """Also compute small floating-point results; off while the step is built (weight init)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        known = all(real_of(a) is not None for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor))
        if not known and func.name().startswith("aten::_foreach_"):
            return self.foreach_by_shape(func, args, kwargs)
        try:
            out, data_dependent = func(*args, **kwargs), False
        except (DynamicOutputShapeException, DataDependentOutputException):
            out, data_dependent = None, True
        if known and (data_dependent or all(self.wanted(o) for o in tensor_leaves(out))):
            return self.run_real(func, args, kwargs, out)
        if data_dependent:
            if func is torch.ops.aten._local_scalar_dense.default:
                return 0  # .item() of a value computed from big tensors (a loss, an inf check)
            raise RuntimeError(f"{func} depends on the values of a tensor the trace does not compute")
        if func._schema.is_mutable:
            for o in tensor_leaves(out):
                o.real_value = None  # written by an op the trace did not compute
        return out

    def foreach_by_shape(self, func, args, kwargs):
        """A foreach op (one kernel over lists of tensors: the optimizer's, the clipping's) run on one element of
        each shape, the other elements' results made like it: what FakeTensorMode makes of each element, which
        it computes one by one in Python, in a tenth of the time for a backbone's parameters."""
        lists = [i for i, arg in enumerate(args) if isinstance(arg, list | tuple)]
        if not lists or not all(isinstance(t, FakeTensor) for i in lists for t in args[i]):
            return func(*args, **kwargs)
        groups: dict[tuple, list[int]] = {}
        for index, elements in enumerate(zip(*(args[i] for i in lists), strict=True)):
            shapes = tuple((t.shape, t.stride(), t.dtype, t.fake_device) for t in elements)
            groups.setdefault(shapes, []).append(index)
        firsts = [members[0] for members in groups.values()]
        results = func(*([arg[j] for j in firsts] if i in lists else arg for i, arg in enumerate(args)), **kwargs)
        if not results:  # in place
            return results
        out = [None] * len(args[lists[0]])
        converter = self.fake_mode.fake_tensor_converter
        for first, members in zip(results, groups.values(), strict=True):
            out[members[0]] = first
            for index in members[1:]:
                with unset_fake_temporarily():
                    meta = torch.empty_strided(first.shape, first.stride(), dtype=first.dtype, device="meta")
                out[index] = converter.from_meta_and_device(self.fake_mode, meta, first.fake_device)
        return out

    def wanted(self, tensor: torch.Tensor) -> bool:
        return tensor.numel() <= SHADOW_MAX_NUMEL and (self.real_floats or not tensor.is_floating_point())

    def run_real(self, func, args, kwargs, out):
        real_args, real_kwargs = tree_map_only(torch.Tensor, real_of, (args, kwargs))
        with unset_fake_temporarily():
            real = func(*real_args, **real_kwargs)
            if func is torch.ops.c10d.allgather_.default:
                for outputs, tensor in zip(real_args[0], real_args[1], strict=True):
                    for output in outputs:
                        output.copy_(tensor)
        if out is None:
            out = tree_map_only(torch.Tensor, lambda r: self.fake_mode.from_tensor(r, static_shapes=True), real)
        for o, r in zip(tree_flatten(out)[0], tree_flatten(real)[0], strict=True):
            if isinstance(o, torch.Tensor):
                o.real_value = r
        return out


def tensor_leaves(tree) -> list[torch.Tensor]:
    return [leaf for leaf in tree_leaves(tree) if isinstance(leaf, torch.Tensor)]


def real_of(tensor: torch.Tensor) -> torch.Tensor | None:
    """The real twin of a fake tensor, if it has one; never one of a tensor that takes part in autograd."""
    if tensor.requires_grad:
        return None
    return getattr(tensor, "real_value", None) if isinstance(tensor, FakeTensor) else tensor


class PartTracker(MemTracker):
    """MemTracker that also keeps the live bytes per part, and the parts at the peak.

    A storage belongs to the classifier's state when it is persistent (a parameter, gradient,
    optimizer state, or made while the step was built) and shaped (class rows, embedding);
    to the backbone's state when persistent otherwise; to the activations when made while the
    backbone module ran forward or backward (or, as the input images, while the step was built);
    everything else is a classifier temporary.
    """

    def __init__(
        self,
        class_rows: set[int],
        embedding_size: int,
        allocator: CachingAllocator | None = None,
        events: list[list[int]] | None = None,
    ) -> None:
        super().__init__()
        self.allocator = allocator
        """Fed every storage's allocation and release, in order (a CUDA cell's); None: not modelled."""
        self.events = events
        """Where each update of a storage is written as one bench.workload.events row; None: not written."""
        self.blocks: dict = {}
        self.block_ids: dict = {}
        self.class_rows = class_rows
        self.embedding_size = embedding_size
        self.building = True
        self.backbone: torch.nn.Module | None = None
        self.tensor: torch.Tensor | None = None
        self.live = dict.fromkeys(TRACED_PARTS, 0)
        self.peak_bytes = 0
        self.peak_parts = dict(self.live)

    # MemTracker's dispatch and module hooks, less what keeps its per-module statistics, which the trace does not
    # read: a deep copy of the memory snapshot at every module's entry and exit, a pass over every tracked module
    # at every op. What each storage is counted as is unchanged; the peak is kept in _update_snap.

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.prim.device.default:
            # two calls in three: autograd, the optimizer and clip_grad asking a tensor's device, answered as
            # FakeTensorMode answers it, without passing the call down through RealValues
            (tensor,) = args
            return torch.device("meta") if tensor.fake_mode.in_kernel_invocation else tensor.fake_device
        if self.building and func in INIT_OPS and args[0].is_floating_point() and real_of(args[0]) is None:
            return args[0]  # a fake weight's initial values: nothing to compute, and nothing is allocated
        out = func(*args, **(kwargs or {}))
        if self._in_opt:
            reftype = _MemRefType.OPT
        elif self._mod_tracker.is_bw and not self._in_ac:
            reftype = _MemRefType.TEMP
        else:
            reftype = _MemRefType.ACT
        for tensor in tensor_leaves(out):
            self._track(reftype, tensor)
        return out

    def _pre_fw_hook(self, module: torch.nn.Module, inputs) -> None:
        if module not in self.memory_tracking:
            self._track_module_params_and_buffers(module, install_grad_hooks=True)
            self.memory_tracking[module] = _ModMemStats(self._mod_tracker.get_known_fqn(module))
        elif self._mod_tracker.is_bw:
            if self._ac_mod is None:  # the topmost module recomputed by activation checkpointing
                self._ac_mod = weakref.ref(module)
                self._in_ac = True

    def _post_fw_hook(self, module: torch.nn.Module, inputs, outputs) -> None:
        if self._mod_tracker.is_bw and self._ac_mod is not None and self._ac_mod() is module:
            self._ac_mod = None
            self._in_ac = False

    def _pre_bw_hook(self, module: torch.nn.Module, args) -> None:
        pass

    def _post_bw_hook(self, module: torch.nn.Module, args) -> None:
        pass

    def class_shaped(self, tensor: torch.Tensor) -> bool:
        return tensor.dim() == 2 and tensor.shape[0] in self.class_rows and tensor.shape[1] == self.embedding_size

    def part_of(self, winfo) -> str:
        if winfo.reftype in PERSISTENT or winfo.built:
            if winfo.class_shaped:
                return CLASSIFIER_STATE
            return BACKBONE_STATE if winfo.reftype in PERSISTENT else ACTIVATIONS
        return ACTIVATIONS if winfo.in_backbone else CLASSIFIER_TEMPORARIES

    def in_backbone(self) -> bool:
        name = self._mod_tracker.get_known_fqn(self.backbone) if self.backbone is not None else None
        return name is not None and name in self._mod_tracker.parents

    def allocate(self, u_type, winfo) -> list[int]:
        """Pass a storage's allocation, release or resize on to the allocator model; what it was told, as the
        allocator columns of a bench.workload.events row."""
        told = [NO_BLOCK, NO_BLOCK, 0]
        if self.allocator is None:
            return told
        if u_type in (_UpdateType.DEL, _UpdateType.SIZE) and winfo in self.blocks:
            self.allocator.free(self.blocks.pop(winfo))
            told[0] = self.block_ids[winfo]
        if u_type != _UpdateType.DEL and winfo not in self.blocks and winfo.mem_consumed > 0:
            self.blocks[winfo] = self.allocator.malloc(winfo.mem_consumed)
            told[1:] = self.block_ids.setdefault(winfo, len(self.block_ids)), winfo.mem_consumed
        return told

    def _track(self, reftype, t) -> None:
        self.tensor = t
        try:
            super()._track(reftype, t)
        finally:
            self.tensor = None  # a reference kept here would stop autograd from reusing a gradient

    def _update_and_maybe_create_winfos(self, t, reftype, update_existing=False):
        self.tensor = t
        try:
            return super()._update_and_maybe_create_winfos(t, reftype, update_existing)
        finally:
            self.tensor = None

    def _update_snap(self, u_type, winfo, old_mem_consumed=None, old_reftype=None) -> None:
        super()._update_snap(u_type, winfo, old_mem_consumed, old_reftype)
        told = self.allocate(u_type, winfo)
        before = list(self.live.values())
        # MemTracker adds no storage of 0 bytes (an empty Parameter): it is counted from its first update
        if u_type == _UpdateType.ADD or not hasattr(winfo, "built"):
            winfo.class_shaped = self.class_shaped(self.tensor)
            winfo.built = self.building
            winfo.in_backbone = self.in_backbone()
            self.live[self.part_of(winfo)] += winfo.mem_consumed
        elif u_type == _UpdateType.DEL:
            self.live[self.part_of(winfo)] -= winfo.mem_consumed
        elif u_type == _UpdateType.SIZE:
            self.live[self.part_of(winfo)] += winfo.mem_consumed - old_mem_consumed
        elif u_type == _UpdateType.REF:
            new_reftype, winfo.reftype = winfo.reftype, old_reftype
            self.live[self.part_of(winfo)] -= winfo.mem_consumed
            winfo.reftype = new_reftype
            self.live[self.part_of(winfo)] += winfo.mem_consumed
        if self.events is not None:
            self.events.append([now - then for now, then in zip(self.live.values(), before)] + told)
        total = sum(self.live.values())
        if total > self.peak_bytes:
            self.peak_bytes = total
            self.peak_parts = dict(self.live)


class LocalModule(torch.nn.Module):
    """Stands in for DistributedDataParallel, which reads tensor data that fake tensors lack.

    DDP's own bytes (its gradient buckets) are modelled beside the trace.
    """

    def __init__(self, module: torch.nn.Module, *args, **kwargs) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def register_comm_hook(self, state, hook) -> None:
        pass


def local_module(step: BaseStep, backbone: torch.nn.Module, **options) -> LocalModule:
    """BaseStep.data_parallel under the trace: the backbone in a LocalModule."""
    return LocalModule(backbone)


@contextlib.contextmanager
def tracing_patches(cell: Cell) -> Iterator[None]:
    """DDP as a plain wrapper, Module.to as a no-op (fake parameters cannot be swapped in place),
    and for a CUDA cell the multi-tensor (foreach) optimizer and gradient clipping that PyTorch
    picks on a GPU, with their temporaries, instead of the CPU's loop over parameters.

    Moving changes no byte count: the trace runs on the CPU whatever the cell's device.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(BaseStep, "data_parallel", local_module))
        stack.enter_context(mock.patch.object(torch.nn.Module, "to", lambda self, *args, **kwargs: self))
        if cell.on_gpu:
            stack.enter_context(
                mock.patch.object(sgd, "_default_to_fused_or_foreach", lambda *args, **kwargs: (False, True))
            )
            stack.enter_context(mock.patch.object(clip_grad, "_has_foreach_support", lambda *args, **kwargs: True))
        yield


def class_rows(cell: Cell) -> set[int]:
    """Row counts of the rank's class tensors: its shard, and its sampled centres."""
    _, num_local = shard_of(cell.classes, cell.world_size, 0)
    return {num_local, int(cell.sample_rate * num_local)}


@dataclasses.dataclass(frozen=True)
class Trace:
    """What rank 0's step holds, from its trace."""

    peak_bytes: int
    """Bytes of live tensors at their peak."""
    parts: dict[str, int]
    """Those bytes per part (TRACED_PARTS)."""
    backbone_bytes: int
    """Bytes of the backbone's trained parameters."""
    reserved_bytes: int | None
    """What PyTorch's CUDA caching allocator would have reserved at most for the same tensors (a CUDA
    cell's; None for a CPU cell)."""
    events: list[list[int]] | None
    """A classifier alone's (backbone "none"): every update of a storage in order, bench.workload.events
    rows, from which a classifier of other sizes is composed (bench.advise.scale); None for other cells."""


def trace(cell: Cell) -> Trace:
    """Trace rank 0's step of cell."""
    if distributed.is_initialized():
        raise RuntimeError("the memory trace needs a process of its own (a process group is already set up)")
    distributed.init_process_group("fake", store=FakeStore(), rank=0, world_size=cell.world_size)
    try:
        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        allocator = CachingAllocator() if cell.on_gpu else None
        events = [] if cell.backbone == "none" else None
        tracker = PartTracker(class_rows(cell), cell.embedding_size, allocator, events)
        real_values = RealValues(fake_mode)
        with fake_mode, real_values, tracing_patches(cell), tracker:
            # a batch read from records has the synthetic batch's shapes; the trace reads no files
            step = build_step(dataclasses.replace(cell, data="synthetic"), torch.device("cpu"), 0)
            backbone = step.backbone.module if isinstance(step.backbone, LocalModule) else step.backbone
            for module in frozen_parameter_modules(backbone):
                for param in module.parameters(recurse=False):
                    if not param.requires_grad:
                        tracker._param_to_grad_hook_handles[param] = (NoHook(), NoHook())
            tracker.backbone = step.backbone
            tracker.building = False
            real_values.real_floats = True
            with collected_between_steps():
                for _ in range(NUM_STEPS):
                    step()
                    gc.collect()
                    tracker.reset_mod_stats()
        backbone_bytes = sum(p.numel() * p.element_size() for p in backbone.parameters() if p.requires_grad)
        reserved_bytes = allocator.peak_reserved_bytes if allocator is not None else None
        return Trace(tracker.peak_bytes, tracker.peak_parts, backbone_bytes, reserved_bytes, events)
    finally:
        distributed.destroy_process_group()


@contextlib.contextmanager
def collected_between_steps() -> Iterator[None]:
    """No cyclic garbage collection but the trace's own, after each step.

    The tracker's backward hooks close a reference cycle around each step's autograd graph, which
    holds the step's parameters: a classifier that swaps in a new Parameter each step (the 2021 and
    2022 impls) would keep the last one alive until the collector happened to run, so that a cell's
    peak depended on the cells traced before it in the same process. Without the tracker the graph
    is freed when backward ends; collecting after each step frees it at the same point of the step.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def frozen_parameter_modules(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if any(not p.requires_grad for p in m.parameters(recurse=False))]


class NoHook:
    """A hook handle for a parameter that gets no gradient (MemTracker would hook every parameter)."""

    def remove(self) -> None:
        pass
