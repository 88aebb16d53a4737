"""Faults a test injects into chosen ranks, to check that pfcbench records what a real fault does.

Test-only: set PFCBENCH_TEST_FAULTS in the environment of `pfcbench run` or `pfcbench cell` (the
ranks inherit it) to a comma-separated list of KIND@RANK[=VALUE]:

- `nan@R`: rank R's embeddings are multiplied by NaN (whatever the backbone), so the job's loss is NaN;
- `slow@R=S`: rank R sleeps S seconds (default 0.05) in each backbone forward;
- `memory@R=M`: rank R holds M MiB more (default 256) from the first step on.

Nothing else reads the variable; unset, every method here is a no-op.
"""

from __future__ import annotations

import os
import time

import torch

FAULTS_ENV = "PFCBENCH_TEST_FAULTS"
DEFAULTS = {"nan": 1.0, "slow": 0.05, "memory": 256.0}


def parse_faults(text: str, rank: int) -> dict[str, float]:
    """The faults of `rank` in a PFCBENCH_TEST_FAULTS value; ValueError names a malformed entry."""
    faults = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        kind, _, rest = entry.partition("@")
        where, _, value = rest.partition("=")
        if kind not in DEFAULTS or not where.isdigit():
            raise ValueError(f"{FAULTS_ENV}: {entry!r} is not KIND@RANK[=VALUE] with KIND one of {', '.join(DEFAULTS)}")
        if int(where) == rank:
            faults[kind] = float(value) if value else DEFAULTS[kind]
    return faults


class Faults:
    """The faults injected into this rank: applied to its images and around its backbone's forward."""

    def __init__(self, rank: int, device: torch.device) -> None:
        self.faults = parse_faults(os.environ.get(FAULTS_ENV, ""), rank)
        self.device = device
        self.ballast: torch.Tensor | None = None

    def after_forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The backbone's output as the faults leave it, after the sleep of a slow rank."""
        if "memory" in self.faults and self.ballast is None:
            self.ballast = torch.ones(int(self.faults["memory"] * 2**18), device=self.device)
        if "slow" in self.faults:
            time.sleep(self.faults["slow"])
        return embeddings * float("nan") if "nan" in self.faults else embeddings
