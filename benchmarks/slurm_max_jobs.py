"""Wall time of a six-cell Slurm sweep with --max-jobs 1 and with --max-jobs 2, on the test suite's Slurm.

Starts the two-node single-host Slurm of tests/slurm_cluster.py (root, Debian's slurm-wlm and munge),
runs six 1-rank CPU cells through `pfcbench run --launcher slurm` once per setting, and prints both
wall times, their ratio, and whether the jobs of the second sweep overlapped in time.

    python benchmarks/slurm_max_jobs.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.store.results import read_records  # noqa: E402
from tests.slurm_cluster import require_binaries, start, stop  # noqa: E402
from tests.sweeps import run_sweep, write_matrix  # noqa: E402

BATCHES = "8, 16, 24, 32, 40, 48"


def sweep(matrix: Path, results: Path, max_jobs: int) -> tuple[float, list[dict]]:
    started = time.monotonic()
    run_sweep(matrix, results, "--launcher", "slurm", "--nproc", "1", "--max-jobs", str(max_jobs))
    return time.monotonic() - started, read_records(results / "tiny" / "results.jsonl")


def overlaps(records: list[dict]) -> int:
    """Pairs of records whose [start, end] intervals overlap."""
    spans = sorted((r["started_at"], r["started_at"] + r["duration_s"]) for r in records)
    return sum(b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1 :])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pfcbench-slurm-bench-") as tmp:
        root = Path(tmp)
        procs: list = []
        (root / "slurm").mkdir()
        try:
            start(require_binaries(), root / "slurm", procs)
            matrix = write_matrix(root, BATCHES, steps=2)
            one_s, one = sweep(matrix, root / "one", 1)
            two_s, two = sweep(matrix, root / "two", 2)
        finally:
            stop(procs)
    assert {r["status"] for r in one + two} == {"ok"}, [r.get("error") for r in one + two]
    print(f"--max-jobs 1: {one_s:.1f} s wall, {overlaps(one)} overlapping job pairs")
    print(f"--max-jobs 2: {two_s:.1f} s wall, {overlaps(two)} overlapping job pairs")
    print(f"ratio: {two_s / one_s:.2f} (acceptance: at most 0.65)")


if __name__ == "__main__":
    main()
