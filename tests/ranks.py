"""Run a function on several real gloo ranks on 127.0.0.1 (processes of a fork server, a free port)."""

from __future__ import annotations

import os
from datetime import timedelta

import torch.multiprocessing as mp
from torch import distributed

from bench.launch.local import free_port


def _entry(rank: int, fn, world_size: int, port: int, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    distributed.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=60))
    try:
        fn(rank, world_size, *args)
    finally:
        distributed.destroy_process_group()


PRELOADED = ["torch", "torch.distributed", "torch._dynamo", "bench.workload"]
"""What the fork server imports once, so that each rank forks with it loaded instead of importing torch
again, and torch._dynamo, which DistributedDataParallel's constructor and FlopCounterMode import on first
use (seconds a rank each); the server forks before any torch thread starts, so that the ranks are sound."""


def run_ranks(fn, world_size: int, *args) -> None:
    """Call fn(rank, world_size, *args) in world_size processes joined by a gloo group."""
    mp.set_forkserver_preload(PRELOADED)
    mp.start_processes(_entry, args=(fn, world_size, free_port(), args), nprocs=world_size, start_method="forkserver")
