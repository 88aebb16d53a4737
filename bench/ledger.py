"""The in-flight ledger of a results folder: which Slurm job runs which cell, from which scratch folder.

An entry is written (fsync, atomic rename) before pfcbench waits on the job, and removed only
once the cell's record is on disk. So when the submitting process dies (kill -9, a lost SSH
session, a reboot of the login node), the next `pfcbench run` of the matrix finds every job it left
in flight and adopts it instead of submitting the cell again: no cell is ever in flight twice.
Each entry also keeps what the run built its plan from (PlanSource), so that `pfcbench collect`
records the job as that run would have: with its overrides and sections.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results import write_atomic

LEDGER = "in-flight.json"


@dataclass(frozen=True, kw_only=True)
class PlanSource:
    """What a run built its plan from besides the results folder (its matrix.toml and records): enough to build
    the same plan again."""

    overrides: dict[str, Any] = field(default_factory=dict)
    """Cell fields set over every cell from the command line (--nproc, --set, ...)."""
    section_numbers: tuple[int, ...] = ()
    """The matrix's sections the run kept (--section), numbered from 1; () for every section."""
    rerun: str | None = None
    """What --rerun ran again (failed, all), or None."""

    def to_dict(self) -> dict:
        return {"overrides": self.overrides, "section_numbers": list(self.section_numbers), "rerun": self.rerun}

    @classmethod
    def of_entry(cls, entry: dict) -> PlanSource:
        """The source kept in a ledger entry; an entry written before entries kept one had no overrides to keep."""
        kept = entry.get("plan", {})
        return cls(
            overrides=kept.get("overrides", {}),
            section_numbers=tuple(kept.get("section_numbers", ())),
            rerun=kept.get("rerun"),
        )


def ledger_path(results_dir: Path) -> Path:
    return results_dir / LEDGER


def read_ledger(results_dir: Path) -> dict[str, dict]:
    """Job id -> {cell_id, config, workdir, submitted_at, plan}; empty when nothing is in flight.

    plan is a PlanSource's dict (PlanSource.of_entry reads it); an entry written by an earlier version has none.
    """
    try:
        return json.loads(ledger_path(results_dir).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{ledger_path(results_dir)}: not a ledger of jobs in flight ({exc})") from None


def add_job(results_dir: Path, job_id: str, cell_id: str, config: dict, workdir: Path, source: PlanSource) -> None:
    entries = read_ledger(results_dir)
    entries[job_id] = {
        "cell_id": cell_id,
        "config": config,
        "workdir": str(workdir),
        "submitted_at": time.time(),
        "plan": source.to_dict(),
    }
    write_atomic(ledger_path(results_dir), json.dumps(entries, indent=1))


def remove_job(results_dir: Path, job_id: str) -> None:
    entries = read_ledger(results_dir)
    if entries.pop(job_id, None) is None:
        return
    if entries:
        write_atomic(ledger_path(results_dir), json.dumps(entries, indent=1))
    else:
        ledger_path(results_dir).unlink(missing_ok=True)
