"""Fit the time model's global constants on the six reports' published samples/sec, and say how far off it is.

Every published samples/sec figure of insightface's six reports (rtx3080, rtx3090, v100, a10, a30, a100)
that pfcbench runs counts: each packaged matrix's rows with a number published, not "Fail" and not
not_run, each predicted on the GPU and server its matrix's [report] names. The constants of
bench.time_model (none per GPU, none per cell) are fitted by least squares on the log of predicted over
published, each kept in a physical range. Printed, per report and overall, the mean absolute percentage
error in sample (fitted on all six) and leave-one-GPU-out (fitted on five, the sixth predicted), and
beside them the two shortcuts on the pairs of identical cells across reports: a figure on another GPU
scaled by the ratio of peak FLOP/s at the cell's precision, or by the ratio of memory bandwidth.

    python benchmarks/time_published.py        # a few seconds; writes benchmarks/time_published.md, and
                                               # bench/time_model.py's FIT (the errors and ranges plan prints)
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from bench.config import Cell
from bench.gpus import GPUS, SERVERS, GpuSpec, Server
from bench.matrix import PACKAGED, load_matrix
from bench.time_model import TIME_CONSTANTS, Constants, Fitted, flop_rate, link_name, predict_samples_per_s

REPORTS = ("rtx3080", "rtx3090", "v100", "a10", "a30", "a100")
OUTPUT = Path(__file__).with_suffix(".md")
TIME_MODEL = Path(__file__).resolve().parents[1] / "bench" / "time_model.py"
RANGE_FIELDS = ("classes", "batch_size", "world_size", "nnodes")
"""The cell fields whose published range `plan --gpu` calls a prediction extrapolated outside of."""

BOUNDS: dict[str, tuple[float, float]] = {
    "tensor_efficiency": (0.01, 1.0),
    "fp32_efficiency": (0.01, 1.0),
    "memory_efficiency": (0.01, 1.0),
    "memory_overlap": (0.01, 1.0),
    "launch_s": (1e-6, 1e-3),
    "all_reduce_latency_s": (5e-6, 5e-4),
    "link_efficiency": (0.05, 1.0),
    "ddp_overlap": (0.01, 1.0),
    "half_activation_traffic": (0.5, 2.0),
    "decode_s_per_sample": (1e-5, 1e-2),
}
"""Each constant's physical range: shares at most 1, latencies from microseconds to a millisecond."""


@dataclass(frozen=True)
class Figure:
    """One published samples/sec figure and where it ran."""

    report: str
    cell: Cell
    gpu: GpuSpec
    server: Server
    published: float


def published_figures() -> list[Figure]:
    """Every published samples/sec of the six reports that pfcbench runs, once per cell of a report."""
    figures = []
    for report in REPORTS:
        matrix = load_matrix(PACKAGED / f"{report}.toml")
        gpu, server = GPUS[matrix.report["gpu"]], SERVERS[matrix.report["server"]]
        seen = set()
        for section in matrix.sections:
            for row in section.rows if section.search is None else ():
                number = isinstance(row.published, int | float) and not isinstance(row.published, bool)
                if row.not_run is None and number and row.cell.cell_id not in seen:
                    seen.add(row.cell.cell_id)
                    figures.append(Figure(report, row.cell, gpu, server, float(row.published)))
    return figures


NAMES = [f.name for f in fields(Constants)]
LOWER, UPPER = (np.log([BOUNDS[name][i] for name in NAMES]) for i in (0, 1))


def constants_of(x: np.ndarray) -> Constants:
    return Constants(**{name: float(math.exp(v)) for name, v in zip(NAMES, x, strict=True)})


def errors(constants: Constants, figures: list[Figure]) -> list[float]:
    """Predicted over published, less one, per figure."""
    return [predict_samples_per_s(f.cell, f.gpu, f.server, constants) / f.published - 1 for f in figures]


def fit(figures: list[Figure]) -> Constants:
    """The constants that make the log of predicted over published smallest in the least-squares sense."""
    start = np.clip(np.log([getattr(TIME_CONSTANTS, name) for name in NAMES]), LOWER, UPPER)

    def residuals(x: np.ndarray) -> list[float]:
        return [math.log1p(e) for e in errors(constants_of(x), figures)]

    return constants_of(least_squares(residuals, start, bounds=(LOWER, UPPER)).x)


def percent(values: list[float]) -> float:
    return 100 * float(np.mean(np.abs(values)))


def worst_percent(values: list[float]) -> float:
    return 100 * float(np.max(np.abs(values)))


def peak_ratio(cell: Cell, to: GpuSpec, of: GpuSpec) -> float:
    """The ratio of peak FLOP/s at the precision the cell's trunk runs in (TF32 where allowed and present)."""
    return flop_rate(to, cell.precision, cell.tf32, TIME_CONSTANTS) / flop_rate(
        of, cell.precision, cell.tf32, TIME_CONSTANTS
    )


def same_work(figure: Figure) -> tuple:
    """What makes two figures the same cell across reports: the cell less its program, margin, labels and data,
    with TF32 as the GPU runs it (fp32 with TF32 allowed on a GPU with TF32)."""
    cell = figure.cell
    tf32 = cell.precision == "fp32" and cell.tf32 and figure.gpu.peaks.tf32 is not None
    return (cell.backbone, cell.precision, tf32, cell.classes, cell.sample_rate, cell.batch_size, cell.embedding_size)


def shortcuts(figures: list[Figure]) -> tuple[int, float, float]:
    """(pairs, MAPE of the FLOP ratio, MAPE of the bandwidth ratio) over the identical cells across reports,
    each pair predicted both ways."""
    flop, bandwidth = [], []
    pairs = [
        (a, b) for a, b in itertools.combinations(figures, 2) if a.report != b.report and same_work(a) == same_work(b)
    ]
    for a, b in pairs:
        for known, wanted in ((a, b), (b, a)):
            flop.append(known.published * peak_ratio(known.cell, wanted.gpu, known.gpu) / wanted.published - 1)
            ratio = wanted.gpu.bandwidth_gb_s / known.gpu.bandwidth_gb_s
            bandwidth.append(known.published * ratio / wanted.published - 1)
    return len(pairs), percent(flop), percent(bandwidth)


def leave_one_out(figures: list[Figure]) -> dict[str, list[float]]:
    """Each report's errors, predicted by the constants fitted on the other five."""
    return {
        report: errors(fit([f for f in figures if f.report != report]), [f for f in figures if f.report == report])
        for report in REPORTS
    }


def run() -> tuple[list[str], Fitted]:
    figures = published_figures()
    constants = fit(figures)
    in_sample = errors(constants, figures)
    by_report = {r: [e for f, e in zip(figures, in_sample, strict=True) if f.report == r] for r in REPORTS}
    loo = leave_one_out(figures)
    rows = [
        {
            "report": f.report,
            "gpu": f.gpu.name,
            "cell": f"{f.cell.backbone} {f.cell.precision}{' tf32' if f.cell.tf32 else ''} {f.cell.classes:,} "
            f"rate {f.cell.sample_rate:g} bs {f.cell.batch_size}",
            "published": f.published,
            "predicted": round(f.published * (1 + e)),
            "error %": round(100 * e, 1),
        }
        for f, e in zip(figures, in_sample, strict=True)
    ]
    summary = pd.DataFrame(
        {
            "report": [*REPORTS, "all"],
            "figures": [*(len(by_report[r]) for r in REPORTS), len(figures)],
            "in-sample MAPE %": [*(round(percent(by_report[r]), 1) for r in REPORTS), round(percent(in_sample), 1)],
            "leave-one-GPU-out MAPE %": [
                *(round(percent(loo[r]), 1) for r in REPORTS),
                round(percent([e for r in REPORTS for e in loo[r]]), 1),
            ],
            "leave-one-GPU-out worst %": [
                *(round(worst_percent(loo[r]), 1) for r in REPORTS),
                round(worst_percent([e for r in REPORTS for e in loo[r]]), 1),
            ],
        }
    )
    num_pairs, flop_mape, bandwidth_mape = shortcuts(figures)
    loo_all = percent([e for r in REPORTS for e in loo[r]])
    worst = max(REPORTS, key=lambda r: percent(loo[r]))
    lines = [
        "# The time model against the six reports' published samples/sec",
        "",
        "Fitted constants (bench.time_model.TIME_CONSTANTS):",
        "",
        *(f"    {name} = {value:.4g}" for name, value in constants.to_dict().items()),
        "",
        pd.DataFrame(rows).to_markdown(index=False),
        "",
        summary.to_markdown(index=False),
        "",
        f"Shortcuts on {num_pairs} pairs of identical cells across reports, each predicted both ways: "
        f"peak-FLOP ratio MAPE {flop_mape:.0f}%, memory-bandwidth ratio MAPE {bandwidth_mape:.0f}%; "
        f"the model on the same figures, leave-one-GPU-out: "
        f"{pair_model_mape(figures, loo):.0f}%.",
        "",
        f"leave-one-GPU-out MAPE {loo_all:.0f}%, worst report {percent(loo[worst]):.0f}% ({worst}), "
        f"in-sample MAPE {percent(in_sample):.0f}%",
    ]
    gpu_of = {r: next(f.gpu.name for f in figures if f.report == r) for r in REPORTS}
    by_gpu = {gpu_of[r]: round(percent(loo[r]), 1) for r in REPORTS}
    worst_by_gpu = {gpu_of[r]: round(worst_percent(loo[r]), 1) for r in REPORTS}
    return lines, fitted(figures, round(loo_all, 1), by_gpu, worst_by_gpu, round(percent(in_sample), 1))


def fitted(
    figures: list[Figure],
    leave_one_gpu_out_mape: float,
    by_gpu: dict[str, float],
    worst_by_gpu: dict[str, float],
    in_sample_mape: float,
) -> Fitted:
    """What the constants were fitted on and the model's error there, as bench.time_model.FIT holds it."""
    return Fitted(
        leave_one_gpu_out_mape=leave_one_gpu_out_mape,
        leave_one_gpu_out_by_gpu=by_gpu,
        leave_one_gpu_out_worst_by_gpu=worst_by_gpu,
        in_sample_mape=in_sample_mape,
        gpus=tuple(sorted({f.gpu.name for f in figures})),
        links=tuple(sorted({link_name(f.server.link) for f in figures})),
        precisions=tuple(sorted({f.cell.precision for f in figures})),
        ranges={
            name: (min(getattr(f.cell, name) for f in figures), max(getattr(f.cell, name) for f in figures))
            for name in RANGE_FIELDS
        },
    )


def literal(value: object) -> str:
    """A value as Python source, strings in double quotes as ruff formats them."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(map(literal, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def write_fit(fit: Fitted) -> None:
    """Replace the FIT = Fitted(...) block of bench/time_model.py with fit."""
    body = "".join(f"    {f.name}={literal(getattr(fit, f.name))},\n" for f in fields(fit))
    text, count = re.subn(
        r"^FIT = Fitted\(\n.*?^\)\n", f"FIT = Fitted(\n{body})\n", TIME_MODEL.read_text(), count=1, flags=re.M | re.S
    )
    if count != 1:
        raise SystemExit(f"{TIME_MODEL}: no FIT = Fitted(...) block to write")
    TIME_MODEL.write_text(text)


def pair_model_mape(figures: list[Figure], loo: dict[str, list[float]]) -> float:
    """The model's leave-one-GPU-out error over the figures that belong to a pair of identical cells."""
    paired = {
        id(f)
        for a, b in itertools.combinations(figures, 2)
        if a.report != b.report and same_work(a) == same_work(b)
        for f in (a, b)
    }
    cursor = {r: iter(loo[r]) for r in REPORTS}
    return percent([e for f in figures for e in [next(cursor[f.report])] if id(f) in paired])


def main() -> int:
    lines, fit = run()
    text = "\n".join(lines)
    print(text)
    OUTPUT.write_text(text + "\n")
    write_fit(fit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
