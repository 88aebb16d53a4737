"""The limits on a running cell, the same for a local torchrun and a Slurm job.

A cell is stopped after `timeout_s` of wall clock, or after `inactivity_timeout_s` in which neither
its heartbeat file nor its log changed (the ranks beat after set-up steps and, at most once a
second, after finished steps).
"""

from __future__ import annotations

import time
from pathlib import Path


def pg_timeout_s(inactivity_timeout_s: float) -> float:
    """The ranks' process-group timeout: longer than the inactivity limit, so that a hung collective
    ends as the watchdog's timeout (recorded, logs kept) rather than as an NCCL abort."""
    return 2 * inactivity_timeout_s + 60


class Watchdog:
    """Wall-clock and inactivity clocks of one cell, read from the files in its workdir."""

    def __init__(self, workdir: Path, *, timeout_s: float, inactivity_timeout_s: float) -> None:
        self.watched = [workdir / "heartbeat", workdir / "torchrun.log"]
        self.timeout_s = timeout_s
        self.inactivity_timeout_s = inactivity_timeout_s
        self.started = time.time()

    def restart(self) -> None:
        """Start both clocks again from now (a Slurm job still waiting in the queue)."""
        self.started = time.time()

    def expired(self) -> str | None:
        """Why the cell must stop now, or None while it is within its limits."""
        now = time.time()
        if now - self.started > self.timeout_s:
            return f"wall-clock timeout after {self.timeout_s:g} s"
        if now - self.last_activity() > self.inactivity_timeout_s:
            return f"no progress for {self.inactivity_timeout_s:g} s"
        return None

    def last_activity(self) -> float:
        """When a watched file last changed, or the start if none has since."""
        times = [self.started]
        for path in self.watched:
            try:
                times.append(path.stat().st_mtime)
            except FileNotFoundError:
                pass
        return max(times)
