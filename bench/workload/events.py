"""A classifier's step as the storage updates its memory trace saw, and the trace they add up to.

bench.workload.memtrace writes a row per update of a storage, in order, while it traces a classifier
alone (backbone "none"): how much each traced part grew or shrank, and what the caching allocator
model was told (a block freed, a block taken and its bytes). Replaying the rows gives back the
trace, peak, parts at the peak and what the allocator reserved, to the byte (tests/test_advise.py);
rows whose sizes were scaled to another classifier (bench.advise.scale) give that classifier's.

Torch-free: the parent replays what the trace subprocesses wrote.
"""

from __future__ import annotations

from bench.memory import TRACED_PARTS
from bench.workload.allocator import CachingAllocator

NO_BLOCK = -1
"""The block column of a row where the allocator was told nothing."""
NUM_PARTS = len(TRACED_PARTS)
"""The first columns of a row: the growth of each traced part (bench.memory.TRACED_PARTS)."""
FREED, TAKEN, TAKEN_BYTES = NUM_PARTS, NUM_PARTS + 1, NUM_PARTS + 2
"""The allocator columns: the block freed, the block taken (NO_BLOCK for none) and its bytes."""


def replay(events: list[list[int]], on_gpu: bool) -> dict:
    """The trace the rows add up to: peak_bytes, parts (by name, at the peak) and reserved_bytes (what the
    caching allocator model reserved at most, for a CUDA cell; None for a CPU cell)."""
    allocator = CachingAllocator() if on_gpu else None
    blocks = {}
    live = [0] * NUM_PARTS
    peak_bytes, peak_parts = 0, list(live)
    for row in events:
        if allocator is not None:
            if row[FREED] != NO_BLOCK:
                allocator.free(blocks.pop(row[FREED]))
            if row[TAKEN] != NO_BLOCK:
                blocks[row[TAKEN]] = allocator.malloc(row[TAKEN_BYTES])
        live = [bytes_ + growth for bytes_, growth in zip(live, row, strict=False)]
        total = sum(live)
        if total > peak_bytes:
            peak_bytes, peak_parts = total, live
    return {
        "peak_bytes": peak_bytes,
        "parts": dict(zip(TRACED_PARTS, peak_parts, strict=True)),
        "reserved_bytes": allocator.peak_reserved_bytes if allocator is not None else None,
    }
