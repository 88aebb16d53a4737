"""Time the Partial FC step alone (backbone none) of both arcface_torch impls, side by side.

    python benchmarks/partial_fc_step.py [--device cpu|cuda] [--classes 200000] [--nproc 2] [--rounds 2]

arcface_torch (today's train_v2 + PartialFC_V2) and arcface_torch_2021 (the 2021 train.py +
Partial FC v1) run at sample rates 1.0 and 0.1, each as a real torchrun cell, interleaved over
`--rounds` rounds so that a busy machine slows both alike. The table shows, per impl and rate, the
median over rounds of the median ms/step and global samples/sec, the range of the rounds' medians,
and the peak memory per rank (torch allocated on CUDA, RSS on the CPU; the largest rank), raw and
beyond a 2K-class run of the same impl; then the ratios 2021 / today.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from tabulate import tabulate

from bench.config import Cell
from bench.launch.local import LocalLauncher
from bench.launch.watchdog import Limits

IMPLS = ("arcface_torch", "arcface_torch_2021")
RATES = (1.0, 0.1)
BASELINE_CLASSES = 2000


def peak_mib(record: dict) -> float:
    """The largest rank's peak: torch allocated where the device counts it, else RSS."""
    return record["peak_allocated_mib_max"] or record["peak_rss_mib_max"]


def run(cell: Cell) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        record, _ = LocalLauncher(Limits()).run_cell(cell, Path(tmp))
    if record["status"] != "ok":
        raise SystemExit(f"{cell.impl} at sample rate {cell.sample_rate}: {record['status']}: {record.get('error')}")
    return record


def measure(args: argparse.Namespace) -> tuple[dict, dict]:
    """Records per (impl, rate) over the rounds, and each impl's baseline record."""
    base = Cell(
        backbone="none", classes=args.classes, batch_size=args.batch_size, nproc_per_node=args.nproc,
        device=args.device, label_mode=args.label_mode, warmup_steps=args.warmup, num_windows=args.windows,
        steps_per_window=args.steps,
    )  # fmt: skip
    records: dict[tuple[str, float], list[dict]] = {}
    for _ in range(args.rounds):
        for rate in RATES:
            for impl in IMPLS:
                cell = Cell.from_dict({**base.to_dict(), "impl": impl, "sample_rate": rate})
                records.setdefault((impl, rate), []).append(run(cell))
    small = {"classes": BASELINE_CLASSES, "warmup_steps": 1, "num_windows": 1, "steps_per_window": 2}
    baselines = {impl: run(Cell.from_dict({**base.to_dict(), **small, "impl": impl})) for impl in IMPLS}
    return records, baselines


def summary(runs: list[dict], baseline: dict) -> dict:
    speeds = [r["samples_per_s"] for r in runs]
    peak = max(peak_mib(r) for r in runs)
    return {
        "ms/step": statistics.median(r["step_time_s_median"] for r in runs) * 1000,
        "samples/s": statistics.median(speeds),
        "range": f"{min(speeds):.1f}-{max(speeds):.1f}",
        "peak MiB/rank": peak,
        "beyond 2K classes": peak - peak_mib(baseline),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--classes", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--label-mode", choices=("uniform", "constant"), default="uniform")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of every cell")
    parser.add_argument("--warmup", type=int, default=3, help="steps before the clock starts")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="steps per window")
    args = parser.parse_args()
    records, baselines = measure(args)
    table = [
        {"impl": impl, "sample rate": rate, **summary(records[impl, rate], baselines[impl])}
        for rate in RATES
        for impl in IMPLS
    ]
    print(
        f"Partial FC step alone: {args.classes} classes, global batch {args.batch_size}, {args.nproc} {args.device} "
        f"ranks, {args.label_mode} labels, {args.rounds} interleaved rounds"
    )
    print(tabulate(table, headers="keys", tablefmt="github", floatfmt=".1f"))
    for rate in RATES:
        today, old = (summary(records[impl, rate], baselines[impl]) for impl in IMPLS)
        print(
            f"sample rate {rate}: arcface_torch_2021 / arcface_torch: samples/s {old['samples/s'] / today['samples/s']:.2f}x, "
            f"peak memory per rank {old['peak MiB/rank'] / today['peak MiB/rank']:.2f}x "
            f"({old['beyond 2K classes'] / today['beyond 2K classes']:.2f}x beyond 2K classes)"
        )


if __name__ == "__main__":
    main()
