"""How a failing rank tells the ranks of every other node, through the process group's c10d store.

When a rank on one node runs out of memory, the ranks of the other nodes see only a broken
collective (gloo) or nothing at all (NCCL waits). So a failing rank puts its status in the store
before it leaves, and every rank watches the store: the node that records the cell then knows
that the cell ran out of memory, not merely that a peer vanished.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from torch import distributed

NUM_FAILED_KEY = "pfcbench/num_failed"
STORE_POLL_S = 0.5
BRIEF_KEYS = ("rank", "host", "status", "phase", "exception", "error", "oom_bytes")


def failure_key(rank: int) -> str:
    return f"pfcbench/failed/{rank}"


def store() -> distributed.Store | None:
    """The default process group's store, or None before the group exists."""
    if not distributed.is_initialized():
        return None
    return distributed.distributed_c10d._get_default_store()


def announce(record: dict) -> None:
    """Put this rank's failure in the store; a store that is gone already is no reason to fail again."""
    shared = store()
    if shared is None:
        return
    brief = {k: record.get(k) for k in BRIEF_KEYS}
    brief["error"] = (brief["error"] or "")[-1000:]
    try:
        shared.set(failure_key(record["rank"]), json.dumps(brief))
        shared.add(NUM_FAILED_KEY, 1)
    except (RuntimeError, distributed.DistError):
        pass


def failures(world_size: int, own_rank: int) -> list[dict]:
    """The failures other ranks have announced so far; [] where the store cannot be reached."""
    shared = store()
    try:
        if shared is None or shared.add(NUM_FAILED_KEY, 0) == 0:
            return []
        keys = [failure_key(rank) for rank in range(world_size) if rank != own_rank]
        return [json.loads(shared.get(key)) for key in keys if shared.check([key])]
    except (RuntimeError, distributed.DistError):
        return []


def watch(world_size: int, own_rank: int, on_failure: Callable[[list[dict]], None]) -> None:
    """Call on_failure(failures) from a daemon thread as soon as another rank announces one."""

    def poll() -> None:
        while True:
            found = failures(world_size, own_rank)
            if found:
                on_failure(found)
                return
            threading.Event().wait(STORE_POLL_S)

    threading.Thread(target=poll, name="pfcbench-fanout", daemon=True).start()
