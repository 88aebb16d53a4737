"""A model of PyTorch's CUDA caching allocator: how much memory a sequence of allocations reserves.

nvidia-smi shows what the allocator reserved, not what tensors hold: it takes memory from CUDA in
segments, keeps every freed block cached for reuse, and serves a request from the smallest cached
block that fits, splitting it. A request that no cached block fits takes a new segment, even when
the free bytes would suffice in total: that is fragmentation. The rules are those of
c10/cuda/CUDACachingAllocator.cpp with its default settings (no expandable segments, no
max_split_size): requests round up to 512 bytes; up to 1 MiB they come from a small pool of 2 MiB
segments, larger ones from a large pool, in 20 MiB segments below 10 MiB and in segments of the
request rounded up to 2 MiB above; a large block is split when more than 1 MiB would remain; a
freed block merges with free neighbours of its segment. Nothing is given back to CUDA: with no
memory cap, reserved memory only grows.

Pure Python and torch-free: the memory trace (bench.workload.memtrace) feeds it every storage
allocated and freed in the step's order.
"""

from __future__ import annotations

import bisect
import itertools

from bench.units import MIB

MIN_BLOCK_BYTES = 512
SMALL_REQUEST_BYTES = 1 * MIB
SMALL_SEGMENT_BYTES = 2 * MIB
LARGE_SEGMENT_BYTES = 20 * MIB
MIN_LARGE_SEGMENT_BYTES = 10 * MIB
LARGE_ROUNDING_BYTES = 2 * MIB


class Block:
    """A span of a segment, in use or cached; prev and next are its neighbours in the segment."""

    __slots__ = ("segment", "offset", "size", "small", "free", "prev", "next")

    def __init__(self, segment: int, offset: int, size: int, small: bool) -> None:
        self.segment, self.offset, self.size, self.small = segment, offset, size, small
        self.free = True
        self.prev: Block | None = None
        self.next: Block | None = None

    def key(self) -> tuple[int, int, int]:
        """Best-fit order: size, then address."""
        return self.size, self.segment, self.offset


class CachingAllocator:
    """Blocks served as PyTorch's caching allocator serves them; `peak_reserved_bytes` is the high mark."""

    def __init__(self) -> None:
        self.cached: dict[bool, list[tuple[int, int, int]]] = {True: [], False: []}
        """Per pool (small: True), the keys of its cached blocks, sorted."""
        self.blocks: dict[tuple[int, int, int], Block] = {}
        self.segment_ids = itertools.count()
        self.reserved_bytes = 0
        self.allocated_bytes = 0
        self.peak_reserved_bytes = 0
        self.peak_allocated_bytes = 0

    def malloc(self, nbytes: int) -> Block:
        size = max(MIN_BLOCK_BYTES, -(-nbytes // MIN_BLOCK_BYTES) * MIN_BLOCK_BYTES)
        small = size <= SMALL_REQUEST_BYTES
        pool = self.cached[small]
        found = bisect.bisect_left(pool, (size, -1, -1))
        if found < len(pool):
            block = self.blocks[pool[found]]
            self.uncache(block)
        else:
            block = Block(next(self.segment_ids), 0, segment_bytes(size), small)
            self.reserved_bytes += block.size
            self.peak_reserved_bytes = max(self.peak_reserved_bytes, self.reserved_bytes)
        remaining = block.size - size
        if (remaining >= MIN_BLOCK_BYTES) if small else (remaining > SMALL_REQUEST_BYTES):
            rest = Block(block.segment, block.offset + size, remaining, small)
            rest.prev, rest.next = block, block.next
            if block.next is not None:
                block.next.prev = rest
            block.next, block.size = rest, size
            self.cache(rest)
        block.free = False
        self.allocated_bytes += block.size
        self.peak_allocated_bytes = max(self.peak_allocated_bytes, self.allocated_bytes)
        return block

    def free(self, block: Block) -> None:
        self.allocated_bytes -= block.size
        block.free = True
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free:
                self.uncache(neighbour)
                first, second = (neighbour, block) if neighbour is block.prev else (block, neighbour)
                first.size += second.size
                first.next = second.next
                if second.next is not None:
                    second.next.prev = first
                block = first
        self.cache(block)

    def cache(self, block: Block) -> None:
        key = block.key()
        bisect.insort(self.cached[block.small], key)
        self.blocks[key] = block

    def uncache(self, block: Block) -> None:
        key = block.key()
        pool = self.cached[block.small]
        del pool[bisect.bisect_left(pool, key)]
        del self.blocks[key]


def segment_bytes(size: int) -> int:
    """The segment a request of size (rounded) takes from CUDA when no cached block fits."""
    if size <= SMALL_REQUEST_BYTES:
        return SMALL_SEGMENT_BYTES
    if size < MIN_LARGE_SEGMENT_BYTES:
        return LARGE_SEGMENT_BYTES
    return -(-size // LARGE_ROUNDING_BYTES) * LARGE_ROUNDING_BYTES
