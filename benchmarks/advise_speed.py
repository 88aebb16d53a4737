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
import sys

from cold_warm import cold_then_warm, medians_line

ADVICE = ["--train-on", "webface42m", "--backbone", "r50", "--gpu", "rtx3090,a100-sxm4-80gb", "--gpus", "1,2,4,8,16"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("advice", nargs="*", help="advise's options after --  [default: %(default)s]", default=ADVICE)
    args = parser.parse_args()
    colds, warms = [], []
    for number, (cold, warm, stdout) in enumerate(cold_then_warm(["advise", *args.advice, "--json"], args.rounds), 1):
        colds.append(cold)
        warms.append(warm)
        searched = len(json.loads(stdout)["configurations"])
        print(f"round {number}: cold {cold:.1f} s, warm {warm:.2f} s ({searched} configurations)", flush=True)
    print(medians_line(colds, warms, f"advise {' '.join(args.advice)}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
