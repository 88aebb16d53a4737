"""The limits on a running cell, the same for a local torchrun and a Slurm job.

A cell is stopped after `timeout_s` of wall clock, or after `inactivity_timeout_s` in which neither
its heartbeat file nor its log changed (the ranks beat after set-up steps and, at most once a
second, after finished steps).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bench.config import check_seconds


@dataclass(frozen=True, kw_only=True)
class Limits:
    """How long one cell may take, whichever launcher runs it."""

    timeout_s: float = 1800.0
    """Wall-clock limit of one cell, start-up included."""
    inactivity_timeout_s: float = 300.0
    """Limit on time without a finished step (or, before the first, without any output)."""

    def __post_init__(self) -> None:
        check_seconds("timeout_s", self.timeout_s)
        check_seconds("inactivity_timeout_s", self.inactivity_timeout_s)

    @classmethod
    def of(cls, timeout_s: float | None, inactivity_timeout_s: float | None, defaults: dict | None = None) -> Limits:
        """Each limit as given, else from defaults (a matrix's [run]), else the class's."""
        defaults = defaults or {}
        return cls(
            timeout_s=defaults.get("timeout_s", cls.timeout_s) if timeout_s is None else timeout_s,
            inactivity_timeout_s=defaults.get("inactivity_timeout_s", cls.inactivity_timeout_s)
            if inactivity_timeout_s is None
            else inactivity_timeout_s,
        )

    @property
    def pg_timeout_s(self) -> float:
        """The ranks' process-group timeout: longer than the inactivity limit, so that a hung collective
        ends as the watchdog's timeout (recorded, logs kept) rather than as an NCCL abort."""
        return 2 * self.inactivity_timeout_s + 60

    def watchdog(self, workdir: Path) -> Watchdog:
        """The clocks of a cell running from workdir, started now."""
        return Watchdog(workdir, self)


class Watchdog:
    """Wall-clock and inactivity clocks of one cell, read from the files in its workdir."""

    def __init__(self, workdir: Path, limits: Limits) -> None:
        self.watched = [workdir / "heartbeat", workdir / "torchrun.log"]
        self.limits = limits
        self.started = time.time()

    def restart(self) -> None:
        """Start both clocks again from now (a Slurm job still waiting in the queue)."""
        self.started = time.time()

    def expired(self) -> str | None:
        """Why the cell must stop now, or None while it is within its limits."""
        now = time.time()
        if now - self.started > self.limits.timeout_s:
            return f"wall-clock timeout after {self.limits.timeout_s:g} s"
        if now - self.last_activity() > self.limits.inactivity_timeout_s:
            return f"no progress for {self.limits.inactivity_timeout_s:g} s"
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
