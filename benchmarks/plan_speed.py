"""How long `pfcbench plan a100 --gpu a100-pcie-80gb` takes: cold (an empty trace cache) and warm (all cached).

Each round runs the plan twice in a fresh process with XDG_CACHE_HOME set to a new empty folder: the
first traces every cell (cold), the second reads every trace from the cache (warm). Prints each
round's seconds, then the medians; the last line reads `cold median N s, warm median N s (...)`.

    python benchmarks/plan_speed.py                  # 3 rounds of the A100 report's plan, memory and speed
    python benchmarks/plan_speed.py --rounds 5 v100 --gpu v100-sxm2-32gb
"""

from __future__ import annotations

import argparse
import sys

from cold_warm import cold_then_warm, medians_line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("matrix", nargs="?", default="a100")
    parser.add_argument("--gpu", default="a100-pcie-80gb", help="a GPU of the catalogue (pfcbench gpus)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    argv = ["plan", args.matrix, "--gpu", args.gpu, "--results", "results"]
    colds, warms = [], []
    for number, (cold, warm, _) in enumerate(cold_then_warm(argv, args.rounds), start=1):
        colds.append(cold)
        warms.append(warm)
        print(f"round {number}: cold {cold:.1f} s, warm {warm:.2f} s", flush=True)
    print(medians_line(colds, warms, f"plan {args.matrix} --gpu {args.gpu}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
