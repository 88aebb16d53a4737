"""Time the Partial FC step alone (backbone none) at 200K classes on 2 ranks, sample rates 1.0 and 0.1.

    python benchmarks/partial_fc_step.py [--device cpu|cuda] [--classes 200000] [--nproc 2]

Each sample rate runs as a real torchrun cell; the table shows the median ms/step and global
samples/sec over the timed windows, with their spread, measured one after the other in one run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from tabulate import tabulate

from bench.config import Cell
from bench.launch import Launch, run_cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--classes", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per window")
    args = parser.parse_args()
    rows = []
    for rate in (1.0, 0.1):
        cell = Cell(
            backbone="none", classes=args.classes, batch_size=args.batch_size, nproc_per_node=args.nproc,
            device=args.device, sample_rate=rate, warmup_steps=3, num_windows=args.windows, steps_per_window=args.steps,
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            record = run_cell(cell, Path(tmp), Launch())
        if record["status"] != "ok":
            rows.append([rate, record["status"], "", "", ""])
            continue
        rows.append([
            rate,
            f"{record['step_time_s_median'] * 1000:.1f}",
            f"{record['samples_per_s']:.0f}",
            f"{record['samples_per_s_min']:.0f}-{record['samples_per_s_max']:.0f}",
            f"{record['peak_allocated_mib_max'] or record['peak_rss_mib_max']:.0f}",
        ])  # fmt: skip
    print(
        f"Partial FC step alone: {args.classes} classes, global batch {args.batch_size}, {args.nproc} {args.device} ranks"
    )
    print(
        tabulate(
            rows, headers=["sample rate", "ms/step", "samples/s", "samples/s range", "peak MiB/rank"], tablefmt="github"
        )
    )
    if all(isinstance(r[1], str) and r[1].replace(".", "").isdigit() for r in rows):
        print(f"sample rate 0.1 vs 1.0: {float(rows[0][1]) / float(rows[1][1]):.2f}x faster per step")


if __name__ == "__main__":
    main()
