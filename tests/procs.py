"""Find the processes a test started, by what their command lines contain."""

from __future__ import annotations

import os
import time
from pathlib import Path


def pids_with(*needles: str) -> list[int]:
    """Live processes whose command line contains every needle (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and all(n in cmdline for n in needles):
            found.append(int(entry.name))
    return found


def rank_pids(path: str) -> list[int]:
    """The ranks (python -m bench.rank.worker) of the cells whose folder is under path, not their torchrun agents."""
    agents = set(pids_with("torch.distributed.run", path))
    return [pid for pid in pids_with("bench.rank.worker", path) if pid not in agents]


def wait_until(condition, timeout_s: float, interval_s: float = 0.1):
    """Poll condition until it returns something truthy; return it, or None at the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    return None
