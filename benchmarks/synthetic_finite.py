"""Do synthetic cells of the published configurations train finite losses on this CPU, at every kernel level?

    python benchmarks/synthetic_finite.py [--backbones r50,r100] [--classes 4000] [--steps 4]

Runs, as real 2-rank gloo cells, every combination of backbone (IResNet-50 and -100 by default),
precision (fp32, bf16), label mode (uniform, constant: arcface_torch's SyntheticDataset label) and
classifier impl, under each ATEN_CPU_CAPABILITY level that torch offers on this CPU (`default`,
`avx2`, `avx512` where the CPU has it), at a few thousand classes and a global batch of 8. Prints
per cell the first and last loss and how many timed steps had a non-finite loss, then one line per
capability level; the exit code is 1 if any cell trained a non-finite loss or did not finish.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from bench.config import Cell
from bench.impls import IMPLS
from bench.launch.local import LocalLauncher
from bench.launch.watchdog import Limits

LEVELS = ("default", "avx2", "avx512")
"""ATEN_CPU_CAPABILITY values torch's x86 builds know, lowest first."""


def offered_levels() -> list[str]:
    """The levels torch runs at on this CPU when asked: those it does not lower to another."""
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    offered = []
    for level in LEVELS:
        env = dict(os.environ, ATEN_CPU_CAPABILITY=level)
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
        if done.stdout.strip().lower() == level:
            offered.append(level)
    return offered


def run(cell: Cell, level: str) -> dict:
    """One cell as a real torchrun job at this kernel level (the ranks inherit the environment)."""
    os.environ["ATEN_CPU_CAPABILITY"] = level
    with tempfile.TemporaryDirectory() as tmp:
        return LocalLauncher(Limits()).run_cell(cell, Path(tmp))[0]


def finite(record: dict) -> bool:
    losses = (record.get("loss_first"), record.get("loss_last"))
    return record["status"] == "ok" and record.get("nonfinite_losses") == 0 and all(math.isfinite(x) for x in losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="r50,r100", help="comma-separated backbones")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--classes", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=8, help="global batch over the 2 ranks")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up step)")
    parser.add_argument("--levels", default=None, help="ATEN_CPU_CAPABILITY levels (default: all torch offers here)")
    args = parser.parse_args()
    levels = args.levels.split(",") if args.levels else offered_levels()
    print(f"ATEN_CPU_CAPABILITY levels: {', '.join(levels)}", flush=True)
    rows, failures = [], 0
    combos = itertools.product(
        args.backbones.split(","), levels, args.precisions.split(","), ("uniform", "constant"), args.impls.split(",")
    )
    for backbone, level, precision, labels, impl in combos:
        cell = Cell(
            backbone=backbone, classes=args.classes, batch_size=args.batch_size, nproc_per_node=2, device="cpu",
            precision=precision, label_mode=labels, impl=impl, warmup_steps=1, num_windows=2,
            steps_per_window=max(1, args.steps // 2),
        )  # fmt: skip
        started = time.monotonic()
        record = run(cell, level)
        ok = finite(record)
        failures += not ok
        rows.append([
            level, backbone, precision, labels, impl, record["status"], record.get("loss_first"),
            record.get("loss_last"), record.get("nonfinite_losses"), f"{time.monotonic() - started:.0f}",
            "" if ok else "NOT FINITE" if record["status"] == "ok" else (record.get("error") or "")[-80:],
        ])  # fmt: skip
        print(" | ".join(str(x) for x in rows[-1]), flush=True)
    headers = ["level", "backbone", "precision", "labels", "impl", "status", "loss first", "loss last",
               "non-finite steps", "s", "problem"]  # fmt: skip
    print(tabulate(rows, headers=headers, tablefmt="github", floatfmt=".3f"))
    for level in levels:
        mine = [r for r in rows if r[0] == level]
        print(f"{level}: {sum(not r[-1] for r in mine)} of {len(mine)} cells trained finite losses")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
