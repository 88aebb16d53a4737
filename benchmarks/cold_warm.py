"""Cold and warm runs of a pfcbench command: what benchmarks/plan_speed.py and advise_speed.py time.

Each round runs the command twice in a fresh process with XDG_CACHE_HOME set to a new empty folder
(and the working directory there, so that nothing lands in the caller's): the first fills the trace
cache (cold), the second reads every trace from it (warm).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.rank.host import usable_cpus


def timed(argv: list[str], folder: Path) -> tuple[float, str]:
    """Seconds `pfcbench ARGV` takes from its start to its exit with its cache under folder, and its stdout."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", *argv],
        env={**os.environ, "XDG_CACHE_HOME": str(folder / "cache")},
        cwd=folder,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds, done.stdout


def cold_then_warm(argv: list[str], rounds: int) -> Iterator[tuple[float, float, str]]:
    """Per round: the cold run's seconds, the warm run's, and the warm run's stdout."""
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="pfcbench-speed-") as folder:
            cold, _ = timed(argv, Path(folder))
            warm, stdout = timed(argv, Path(folder))
        yield cold, warm, stdout


def medians_line(colds: list[float], warms: list[float], what: str) -> str:
    """The last line of a speed benchmark: `cold median N s, warm median N s (...)`."""
    return (
        f"cold median {statistics.median(colds):.1f} s, warm median {statistics.median(warms):.2f} s "
        f"({len(colds)} rounds, {what}, {usable_cpus()} CPUs)"
    )
