"""The time model on this machine's CPU: the smoke and example matrices' cells, measured and predicted.

Each CPU cell that ran ok is predicted by bench.host_rates.predict_cpu_step from this machine's rates,
probed afresh (bench.rank.probe: the ranks' convolution and element-wise rates, a large copy, the host
time per kernel, gloo's all-reduce latency and bandwidth), with no constant fitted on these cells.
Printed: per cell measured and predicted samples/sec, the error and the predicted parts, then the
mean absolute percentage error. The target is every cell within 30%.

    python benchmarks/time_cpu.py                     # runs smoke and example in a temporary folder (minutes)
    python benchmarks/time_cpu.py RESULTS_DIR ...     # predicts the cells of results folders already run
    python benchmarks/time_cpu.py > benchmarks/time_cpu.md
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from bench.config import Cell
from bench.host_rates import HostRates, cell_kinds, cell_rates, predict_cpu_step
from bench.report.read import read_run
from bench.store.results import latest_by_cell
from bench.time_model import mape
from bench.verdicts import training_speed

MATRICES = ("smoke", "example")
TARGET_PERCENT = 30.0


def run_matrices(folder: Path) -> list[Path]:
    """Run the smoke and example matrices into folder; their results folders."""
    for name in MATRICES:
        argv = [sys.executable, "-m", "bench.cli", "run", name, "--results", str(folder)]
        subprocess.run(argv, check=True, stdout=sys.stderr)
    return [folder / name for name in MATRICES]


def cell_text(cell: Cell) -> str:
    pfc = f" pfc {cell.sample_rate:g}" if cell.sample_rate < 1 else ""
    cap = f" cap {cell.max_memory_gib:g} GiB" if cell.max_memory_gib is not None else ""
    return f"{cell.backbone} {cell.precision} {cell.classes:,} classes bs {cell.batch_size}{pfc}{cap}"


def rows(results_dir: Path, rates_of) -> list[dict]:
    """A row per CPU cell of the folder that ran ok: measured and predicted samples/sec, and the parts."""
    _, results = read_run(results_dir)
    found = []
    for record in latest_by_cell(results.records).values():
        speed = training_speed(record)
        cell = Cell.from_dict(record["config"])
        if speed is None or cell.on_gpu:
            continue
        step = predict_cpu_step(cell, rates_of(cell))
        parts = {f"{name} ms": round(ms, 1) for name, ms in step.parts_ms().items() if name != "data"}
        found.append({
            "matrix": results_dir.name, "cell": cell_text(cell), "measured": round(speed, 1),
            "predicted": round(step.samples_per_s, 1), "error %": round(100 * (step.samples_per_s / speed - 1), 1),
            **parts,
        })  # fmt: skip
    return found


def rates_text(rates: HostRates, capped: bool) -> str:
    conv = ", ".join(f"{kind} {rate / 1e9:.1f}" for kind, rate in rates.conv_flops_s.items())
    elementwise = ", ".join(f"{kind} {rate:.2f}" for kind, rate in rates.elementwise_gb_s.items())
    under = "under a memory cap's allocator setting" if capped else "uncapped"
    return (
        f"    {rates.ranks} ranks, {rates.threads} threads each, {under}; GEMM {rates.gemm_flops_s / 1e9:.1f} "
        f"GFLOP/s;\n    convolutions {conv} GFLOP/s;\n    element-wise {elementwise} GB/s (activation bytes as "
        f"cost.py counts them);\n    copy {rates.copy_gb_s:.2f} GB/s; {1e6 * rates.op_s:.1f} us a kernel; gloo "
        f"all-reduce {1e6 * rates.all_reduce_latency_s:.0f} us + {rates.all_reduce_gb_s:.2f} GB/s per direction\n"
    )


def report(folders: list[Path]) -> tuple[str, bool]:
    """The markdown of the comparison, and whether every cell is within the target."""
    probed: dict[tuple[int, bool], HostRates] = {}

    def rates_of(cell: Cell) -> HostRates:
        """Probed afresh for the first cell of its ranks and cap, again with a backbone not probed yet."""
        key = (cell.launched_ranks_per_node, cell.max_memory_gib is not None)
        if key not in probed or not cell_kinds(cell) <= probed[key].kinds:
            probed[key] = cell_rates(cell, fresh=key not in probed)
        return probed[key]

    table = pd.DataFrame([row for folder in folders for row in rows(folder, rates_of)])
    if table.empty:
        return "No CPU cell ran ok in these results folders.\n", False
    errors = table["error %"].abs()
    worst = table.loc[errors.idxmax()]
    within = int((errors <= TARGET_PERCENT).sum())
    percent = mape(list(table["predicted"]), list(table["measured"]))
    load = os.getloadavg()[0]
    lines = [
        "# The time model against CPU cells measured on this machine",
        "",
        f"Probed rates (bench.rank.probe; load average {load:.1f} on {os.cpu_count()} CPUs when done):",
        "",
        *(rates_text(rates, capped) for (_, capped), rates in probed.items()),
        "",
        table.to_markdown(index=False),
        "",
        f"CPU cells: MAPE {percent:.0f}%, worst {abs(worst['error %']):.0f}% ({worst['matrix']}: {worst['cell']}), "
        f"{within} of {len(table)} within {TARGET_PERCENT:.0f}%",
    ]
    return "\n".join(lines) + "\n", within == len(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", type=Path, help="results folders already run (default: run them now)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pfcbench-time-cpu-") as folder:
        folders = args.results or run_matrices(Path(folder))
        text, ok = report(folders)
    print(text, end="")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
