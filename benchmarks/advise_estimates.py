"""How far `pfcbench advise`'s composed memory is from the full trace, over a grid of configurations: the
margin bench.advise.search.NEAR must cover.

For each impl and class count, every configuration of 1-16 RTX 3090s x batch 32/128/512 a GPU x sample
rate 1.0/0.2/0.1 x fp16/fp32 (r50) is composed (bench.advise.compose) and traced in full, as `plan` traces
it. Prints per impl and class count how many configurations, the least and the most estimate over full
trace, and whether the lower bound stayed at or below the full trace; the last line reads `estimate /
full trace from N to N over N configurations; NEAR N, lower bound never above: yes|no`. Writes the same
to benchmarks/advise_estimates.md. About 15 minutes on 2 cores.

    python benchmarks/advise_estimates.py
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd

from bench.advise.compose import compose_cells
from bench.advise.search import NEAR, Job, job_cell
from bench.gpus import GPUS
from bench.memory import Tracer
from bench.report.training_runs import TrainingRun

OUTPUT = Path(__file__).with_suffix(".md")
JOBS = [
    ("arcface_torch", 2_059_906),
    ("arcface_torch", 10_000_000),
    ("arcface_torch", 93_431),
    ("arcface_torch_2021", 2_059_906),
    ("arcface_torch_2022", 617_970),
    ("fused", 617_970),
]
GRID = [
    (count, batch, rate, precision)
    for count in (1, 2, 4, 8, 16)
    for batch in (32, 128, 512)
    for rate in (1.0, 0.2, 0.1)
    for precision in ("fp16", "fp32")
]


def main() -> int:
    rows = []
    ratios, below = [], True
    with contextlib.closing(Tracer()) as tracer:
        for impl, classes in JOBS:
            job = Job(backbone="r50", classes=classes, run=TrainingRun(images=1, epochs=1), impl=impl)
            cells = [job_cell(job, GPUS["rtx3090"], *knobs) for knobs in GRID]
            composed = compose_cells(cells, tracer)
            full = tracer.predict(cells)
            these = [c.estimate.peak_bytes / f.peak_bytes for c, f in zip(composed, full, strict=True)]
            held = all(c.lower.peak_bytes <= f.peak_bytes for c, f in zip(composed, full, strict=True))
            rows.append(
                {
                    "impl": impl,
                    "classes": f"{classes:,}",
                    "configurations": len(cells),
                    "least estimate / full": round(min(these), 3),
                    "most estimate / full": round(max(these), 3),
                    "lower bound never above": "yes" if held else "no",
                }
            )
            print(rows[-1], flush=True)
            ratios += these
            below = below and held
    lines = [
        "# advise's composed memory against the full trace",
        "",
        pd.DataFrame(rows).to_markdown(index=False),
        "",
        f"estimate / full trace from {min(ratios):.3f} to {max(ratios):.3f} over {len(ratios)} configurations; "
        f"NEAR {NEAR:g}, lower bound never above: {'yes' if below else 'no'}",
    ]
    text = "\n".join(lines)
    print(lines[-1])
    OUTPUT.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
