"""The caching allocator model: what PyTorch's CUDA allocator reserves for a sequence of tensors."""

from __future__ import annotations

from bench.units import MIB
from bench.workload.allocator import CachingAllocator


def test_a_freed_block_serves_smaller_requests_without_new_memory():
    allocator = CachingAllocator()
    allocator.free(allocator.malloc(100 * MIB))
    first, second = allocator.malloc(60 * MIB), allocator.malloc(40 * MIB)
    assert (first.segment, second.segment) == (0, 0)
    assert allocator.reserved_bytes == allocator.peak_reserved_bytes == 100 * MIB
    assert allocator.allocated_bytes == 100 * MIB


def test_free_bytes_in_two_segments_do_not_serve_one_larger_request():
    allocator = CachingAllocator()
    blocks = [allocator.malloc(600 * MIB) for _ in range(2)]
    for block in blocks:
        allocator.free(block)
    allocator.malloc(1000 * MIB)
    assert allocator.allocated_bytes == 1000 * MIB
    assert allocator.peak_reserved_bytes == 2200 * MIB  # fragmentation: 1200 MiB cached, none of it usable
    assert allocator.peak_allocated_bytes == 1200 * MIB


def test_neighbours_freed_in_any_order_merge_back_into_their_segment():
    allocator = CachingAllocator()
    allocator.free(allocator.malloc(90 * MIB))
    parts = [allocator.malloc(30 * MIB) for _ in range(3)]
    for index in (0, 2, 1):
        allocator.free(parts[index])
    allocator.malloc(90 * MIB)
    assert allocator.peak_reserved_bytes == 90 * MIB


def test_small_requests_share_a_2_mib_segment_and_round_to_512_bytes():
    allocator = CachingAllocator()
    blocks = [allocator.malloc(1000) for _ in range(2048)]  # 1 KiB each once rounded
    assert {block.size for block in blocks} == {1024}
    assert allocator.reserved_bytes == 2 * MIB
    assert allocator.malloc(1).size == 512
    assert allocator.reserved_bytes == 4 * MIB  # the first segment is full


def test_a_mid_size_request_takes_a_20_mib_segment_that_later_ones_share():
    allocator = CachingAllocator()
    allocator.malloc(5 * MIB)
    allocator.malloc(5 * MIB)
    allocator.malloc(8 * MIB)
    assert allocator.reserved_bytes == 20 * MIB
    allocator.malloc(11 * MIB + 1)  # above 10 MiB: a segment of its own, rounded up to 2 MiB
    assert allocator.reserved_bytes == 20 * MIB + 12 * MIB
