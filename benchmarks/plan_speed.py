"""How long `pfcbench plan a100 --gpu a100-pcie-80gb` takes: cold (an empty trace cache) and warm (all cached).

Each round runs the plan twice in a fresh process with XDG_CACHE_HOME set to a new empty folder: the
first traces every cell (cold), the second reads every trace from the cache (warm). Prints each
round's seconds, then the medians; the last line reads `cold median N s, warm median N s (...)`.

    python benchmarks/plan_speed.py                  # 3 rounds of the A100 report's plan, memory and speed
    python benchmarks/plan_speed.py --rounds 5 v100 --gpu v100-sxm2-32gb
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_plan(matrix: str, gpu: str, cache_home: Path, results: Path) -> float:
    """Seconds one `pfcbench plan MATRIX --gpu GPU` takes, from its start to its exit."""
    argv = [sys.executable, "-m", "bench.cli", "plan", matrix, "--gpu", gpu]
    argv += ["--results", str(results)]
    started = time.perf_counter()
    done = subprocess.run(
        argv,
        env={**os.environ, "XDG_CACHE_HOME": str(cache_home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"plan failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("matrix", nargs="?", default="a100")
    parser.add_argument("--gpu", default="a100-pcie-80gb", help="a GPU of the catalogue (pfcbench gpus)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    colds, warms = [], []
    for number in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="pfcbench-plan-speed-") as folder:
            cache_home, results = Path(folder) / "cache", Path(folder) / "results"
            colds.append(timed_plan(args.matrix, args.gpu, cache_home, results))
            warms.append(timed_plan(args.matrix, args.gpu, cache_home, results))
        print(f"round {number}: cold {colds[-1]:.1f} s, warm {warms[-1]:.2f} s", flush=True)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"cold median {statistics.median(colds):.1f} s, warm median {statistics.median(warms):.2f} s "
        f"({args.rounds} rounds, plan {args.matrix} --gpu {args.gpu}, {cpus} CPUs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
