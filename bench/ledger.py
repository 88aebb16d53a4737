"""The in-flight ledger of a results folder: which Slurm job runs which cell, from which scratch folder.

An entry is written (fsync, atomic rename) before pfcbench waits on the job, and removed only
once the cell's record is on disk. So when the submitting process dies (kill -9, a lost SSH
session, a reboot of the login node), the next `pfcbench run` of the matrix finds every job it left
in flight and adopts it instead of submitting the cell again: no cell is ever in flight twice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.results import write_atomic

LEDGER = "in-flight.json"


def ledger_path(results_dir: Path) -> Path:
    return results_dir / LEDGER


def read_ledger(results_dir: Path) -> dict[str, dict]:
    """Job id -> {cell_id, config, workdir, submitted_at}; empty when nothing is in flight."""
    try:
        return json.loads(ledger_path(results_dir).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{ledger_path(results_dir)}: not a ledger of jobs in flight ({exc})") from None


def add_job(results_dir: Path, job_id: str, cell_id: str, config: dict, workdir: Path) -> None:
    entries = read_ledger(results_dir)
    entries[job_id] = {
        "cell_id": cell_id,
        "config": config,
        "workdir": str(workdir),
        "submitted_at": time.time(),
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
