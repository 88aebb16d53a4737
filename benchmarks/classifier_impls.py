"""Time the classifier alone (backbone none) for impls arcface_torch and fused, side by side.

    python benchmarks/classifier_impls.py [--device cpu|cuda] [--classes 200000,2000000]
        [--batch-sizes 128,512] [--rates 1.0,0.1] [--nproc 2] [--max-memory-gib 8.5] [--rounds 2]

Every cell is a real torchrun job. The two impls run one after the other for each cell, in
alternating order, for --rounds rounds; the table shows medians over the rounds: global
samples/sec, fused's ratio to arcface_torch (median of the rounds' ratios), peak memory per rank (peak RSS on the CPU,
max_memory_allocated on CUDA) and the part of it beyond a 2,000-class baseline of the same impl
and batch and beyond the centres' weight, gradient and momentum (3 x the shard). Under
--max-memory-gib a cell that runs out of memory reads Fail.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from tabulate import tabulate

from bench.config import Cell
from bench.launch.local import LocalLauncher
from bench.launch.watchdog import Limits
from bench.workload.partial_fc import shard_of

IMPLS = ("arcface_torch", "fused")
BASELINE_CLASSES = 2000
MIB = 2**20


def numbers(text: str, kind: type) -> list:
    return [kind(v) for v in text.split(",")]


def peak_mib(record: dict) -> float | None:
    if record["status"] != "ok":
        return None
    return record["peak_allocated_mib_max"] or record["peak_rss_mib_max"]


def centres_mib(cell: Cell) -> float:
    """Weight, gradient and momentum of rank 0's shard of centres."""
    num_local = shard_of(cell.classes, cell.world_size, 0)[1]
    return 3 * num_local * cell.embedding_size * 4 / MIB


def run(cell: Cell, launcher: LocalLauncher) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        record, _ = launcher.run_cell(cell, Path(tmp))
    shown = f"{record.get('samples_per_s', 0):.1f} samples/s" if record["status"] == "ok" else record.get("phase")
    print(f"  {cell.impl:13} {cell.classes:>8} classes, batch {cell.batch_size:>4}, rate {cell.sample_rate}: "
          f"{record['status']} {shown}, peak {peak_mib(record)} MiB", flush=True)  # fmt: skip
    return record


def median_or_none(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ok_pair(a: dict, b: dict) -> bool:
    return a["status"] == "ok" and b["status"] == "ok"


def row(cell: Cell, records: dict[str, list[dict]], baselines: dict[tuple[str, int], float | None]) -> list:
    """One table row per impl: status, samples/s, ratio to arcface_torch, memory figures.

    The ratio is the median of the rounds' ratios: each round runs the two impls back to back, so
    a round's ratio sees the same machine load on both sides.
    """
    rows = []
    speeds = {impl: median_or_none([r.get("samples_per_s") for r in records[impl]]) for impl in IMPLS}
    beyond = {}
    for impl in IMPLS:
        statuses = sorted({r["status"] for r in records[impl]})
        peak = median_or_none([peak_mib(r) for r in records[impl]])
        baseline = baselines.get((impl, cell.batch_size))
        beyond[impl] = None if peak is None or baseline is None else peak - baseline - centres_mib(cell)
        speed = speeds[impl] if speeds[impl] is not None else "Fail" if "oom" in statuses else None
        rows.append([impl, "/".join(statuses), speed, peak, beyond[impl]])
    for impl_row in rows:
        impl = impl_row[0]
        pairs = zip(records[impl], records["arcface_torch"])
        ratio = median_or_none([a["samples_per_s"] / b["samples_per_s"] for a, b in pairs if ok_pair(a, b)])
        memory_ratio = beyond[impl] / beyond["arcface_torch"] if beyond[impl] and beyond["arcface_torch"] else None
        impl_row[3:3] = [ratio]
        impl_row.append(memory_ratio)
    return [[cell.classes, cell.batch_size, cell.sample_rate, *r] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--classes", default="200000,2000000", help="comma-separated class counts")
    parser.add_argument("--batch-sizes", default="128,512", help="comma-separated global batches")
    parser.add_argument("--rates", default="1.0,0.1", help="comma-separated sample rates")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--max-memory-gib", type=float, default=None, help="memory cap per rank")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every cell per impl; medians are shown")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="steps per window")
    parser.add_argument("--json", type=Path, help="also write every record to this JSON file")
    args = parser.parse_args()
    launcher = LocalLauncher(Limits(timeout_s=3600, inactivity_timeout_s=900))

    def cell(impl: str, classes: int, batch_size: int, rate: float) -> Cell:
        return Cell(
            backbone="none", impl=impl, classes=classes, batch_size=batch_size, sample_rate=rate,
            nproc_per_node=args.nproc, device=args.device, max_memory_gib=args.max_memory_gib,
            warmup_steps=args.warmup, num_windows=args.windows, steps_per_window=args.steps,
        )  # fmt: skip

    batch_sizes, rates = numbers(args.batch_sizes, int), numbers(args.rates, float)
    print("baselines", flush=True)
    baselines = {(i, b): peak_mib(run(cell(i, BASELINE_CLASSES, b, 1.0), launcher)) for b in batch_sizes for i in IMPLS}
    points = [(c, b, r) for c in numbers(args.classes, int) for b in batch_sizes for r in rates]
    records: dict = {p: {impl: [] for impl in IMPLS} for p in points}
    for round_number in range(args.rounds):
        print(f"round {round_number + 1} of {args.rounds}", flush=True)
        order = IMPLS if round_number % 2 == 0 else IMPLS[::-1]
        for point in points:
            for impl in order:
                records[point][impl].append(run(cell(impl, *point), launcher))
    table = [r for point in points for r in row(cell("fused", *point), records[point], baselines)]
    headers = ["classes", "batch", "rate", "impl", "status", "samples/s", "ratio", "peak MiB/rank",
               "beyond baseline+centres MiB", "memory ratio"]  # fmt: skip
    cap = f", cap {args.max_memory_gib} GiB per rank" if args.max_memory_gib else ""
    print(f"\nClassifier alone: {args.nproc} {args.device} ranks{cap}, medians of {args.rounds} round(s)")
    print(tabulate(table, headers=headers, tablefmt="github", floatfmt=".2f", missingval=""))
    if args.json:
        flat = [{"point": list(p), "impl": i, "record": r} for p in points for i in IMPLS for r in records[p][i]]
        args.json.write_text(
            json.dumps({"baselines": {f"{i}/{b}": v for (i, b), v in baselines.items()}, "runs": flat})
        )


if __name__ == "__main__":
    main()
