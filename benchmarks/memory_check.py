"""Check the memory model against real CPU cells: predicted peak vs the smallest cap that runs.

For each cell (classifier-only cells of every impl at two class counts, and an mbf cell; 2 gloo
ranks on the CPU) it prints the predicted peak beyond start-up memory, the measured one (the
smallest address-space cap beyond start-up under which the real cell runs, bisected between a
cap that runs out of memory and one that runs), and their ratio. Exits 1 when a ratio is off by
more than the tolerance.

    python benchmarks/memory_check.py                      # every impl, about 15 minutes on 2 cores
    python benchmarks/memory_check.py --impl arcface_torch --tolerance 0.15
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.config import IMPLS, Cell
from bench.launch.local import LocalLauncher
from bench.launch.watchdog import Limits
from bench.memory import MIB, predict_cells

QUICK = {"device": "cpu", "nproc_per_node": 2, "warmup_steps": 1, "num_windows": 1, "steps_per_window": 2}
"""Two CPU ranks and three steps: enough to hold the optimizer state during a step."""


def check_cells(impls: list[str]) -> list[Cell]:
    cells = [
        Cell(backbone="none", classes=classes, batch_size=256, impl=impl, **QUICK)
        for impl in impls
        for classes in (100_000, 300_000)
    ]
    return [*cells, Cell(backbone="mbf", classes=20_000, batch_size=32, impl=impls[0], **QUICK)]


def runs_under(cell: Cell, cap_bytes: int) -> bool:
    """Whether the real cell finishes under an address-space cap of cap_bytes beyond start-up."""
    capped = Cell.from_dict({**cell.to_dict(), "max_memory_gib": cap_bytes / 2**30})
    with tempfile.TemporaryDirectory(prefix="pfcbench-memcheck-") as tmp:
        record, _ = LocalLauncher(Limits(timeout_s=900, inactivity_timeout_s=300)).run_cell(capped, Path(tmp) / "work")
    if record["status"] not in ("ok", "oom"):
        raise RuntimeError(
            f"cell {cell.cell_id} under {cap_bytes / MIB:.0f} MiB: {record['status']}: {record.get('error')}"
        )
    return record["status"] == "ok"


def smallest_cap(cell: Cell, guess_bytes: int, precision: float = 0.02) -> int:
    """Bisect the cap between one that fails and one that runs, to within precision."""
    low, high = guess_bytes // 2, guess_bytes * 2
    while runs_under(cell, low):
        low //= 2
    while not runs_under(cell, high):
        high *= 2
    while high - low > precision * high:
        middle = (low + high) // 2
        low, high = (low, middle) if runs_under(cell, middle) else (middle, high)
    return high


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", action="append", choices=IMPLS, help="impl to check (repeatable); default all")
    parser.add_argument("--tolerance", type=float, default=0.15, help="largest |predicted/measured - 1| allowed")
    args = parser.parse_args()
    cells = check_cells(args.impl or list(IMPLS))
    predictions = predict_cells(cells)
    worst = 0.0
    print("| impl | backbone | classes | batch | predicted MiB | measured MiB | ratio | largest part |")
    print("|---|---|---|---|---|---|---|---|")
    for cell, prediction in zip(cells, predictions, strict=True):
        measured = smallest_cap(cell, prediction.peak_bytes)
        ratio = prediction.peak_bytes / measured
        worst = max(worst, abs(ratio - 1))
        print(
            f"| {cell.impl} | {cell.backbone} | {cell.classes} | {cell.batch_size} | {prediction.peak_bytes / MIB:.0f} "
            f"| {measured / MIB:.0f} | {ratio:.3f} | {prediction.largest_part()} |",
            flush=True,
        )
    print(f"worst deviation {worst:.1%} (tolerance {args.tolerance:.0%})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
