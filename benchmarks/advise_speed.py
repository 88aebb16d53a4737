"""How long `pfcbench advise` takes over 2 GPUs x 5 counts x the default knobs: cold (an empty trace cache)
and warm (all cached).

Each round runs the advice twice in a fresh process with XDG_CACHE_HOME set to a new empty folder: the
first traces what it needs (cold), the second reads every trace from the cache (warm). Prints each
round's seconds and how many configurations the advice searched, then the medians; the last line
reads `cold median N s, warm median N s (...)`.

    python benchmarks/advise_speed.py
    python benchmarks/advise_speed.py --rounds 1 -- --train-on glint360k --gpu a10,h100-sxm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ADVICE = ["--train-on", "webface42m", "--backbone", "r50", "--gpu", "rtx3090,a100-sxm4-80gb", "--gpus", "1,2,4,8,16"]


def timed_advice(argv: list[str], cache_home: Path) -> tuple[float, int]:
    """Seconds one `pfcbench advise ARGV --json` takes, from its start to its exit, and the configurations searched."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", "advise", *argv, "--json"],
        env={**os.environ, "XDG_CACHE_HOME": str(cache_home)},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"advise failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds, len(json.loads(done.stdout)["configurations"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("advice", nargs="*", help="advise's options after --  [default: %(default)s]", default=ADVICE)
    args = parser.parse_args()
    colds, warms = [], []
    for number in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="pfcbench-advise-speed-") as folder:
            cold, searched = timed_advice(args.advice, Path(folder))
            warm, _ = timed_advice(args.advice, Path(folder))
        colds.append(cold)
        warms.append(warm)
        print(f"round {number}: cold {cold:.1f} s, warm {warm:.2f} s ({searched} configurations)", flush=True)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"cold median {statistics.median(colds):.1f} s, warm median {statistics.median(warms):.2f} s "
        f"({args.rounds} rounds, advise {' '.join(args.advice)}, {cpus} CPUs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
