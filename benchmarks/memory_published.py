"""Predict the published memory figures: arcface_torch's V100 README table and the six reports.

The V100 table (arcface_torch README of 2021, 8 x V100 32 GB, IResNet-50, fp16, global batch 512,
SyntheticDataset labels, MB per GPU as gpustat shows) is predicted with the 2021 impl and each
figure printed beside the published one.

Then every row of the six packaged reports (rtx3080, rtx3090, v100, a10, a30, a100), with the impl
its matrix names (the 2021 code for the four of 2021 and the A10, the 2022 code for the A30 and
A100), as `pfcbench plan NAME --memory-gib G` predicts it at its card's memory: the published figure or Fail, the
predicted peak GiB per rank, whether the verdict agrees (a published Fail predicted Fail, a
published figure predicted to fit), the part of the model that weighs most, and where the report
gives GPU memory (the A100's), predicted / published. A row pfcbench cannot run (not_run) is
predicted on the cell it stands on (IResNet-200 for IResNet-180 and -300) and marked, never counted.

    python benchmarks/memory_published.py            # the V100 table and the six reports, ~10 min on 2 cores
    python benchmarks/memory_published.py a100 v100  # some reports only
"""

from __future__ import annotations

import sys

from bench.config import IMPLS, Cell
from bench.matrix import PACKAGED, load_matrix
from bench.memory import CLASSIFIER_STATE, CLASSIFIER_TEMPORARIES, predict_cells

V100_MB = {
    (1_000_000, 1.0): 9966,
    (1_000_000, 0.1): 5620,
    (2_000_000, 1.0): 13978,
    (2_000_000, 0.1): 6472,
    (4_000_000, 1.0): 23238,
    (4_000_000, 0.1): 8284,
    (8_000_000, 0.1): 12310,
    (16_000_000, 0.1): 19950,
    (29_000_000, 0.1): 32324,
}
"""Published MB per GPU by (classes, sample rate); rate 1.0 is model parallel, 0.1 Partial FC."""

IMPL = "arcface_torch_2021"
"""The impl of the V100 README table (August 2021)."""

CARD_GIB = {"rtx3080": 10, "rtx3090": 24, "v100": 32, "a10": 22, "a30": 24, "a100": 80}
"""Memory per GPU each report's card has, in GiB: the GB its report or NVIDIA names (the A10 report's
"A10 22GB"; NVIDIA sells it as 24 GB), as `plan --memory-gib` is given for the RTX 3080's 10 GB."""

MEMORY_TOLERANCE = 0.25
"""How far a predicted peak may be from a published GPU memory figure."""


def main() -> int:
    if IMPL not in IMPLS:
        print(f"impl {IMPL} is not available in this version of pfcbench", file=sys.stderr)
        return 2
    names = sys.argv[1:] or list(CARD_GIB)
    unknown = [name for name in names if name not in CARD_GIB]
    if unknown:
        print(f"no published report named {unknown[0]!r}; the reports are {', '.join(CARD_GIB)}", file=sys.stderr)
        return 2
    ok = v100_readme() if not sys.argv[1:] else True
    for name in names:
        ok = check_report(name, CARD_GIB[name]) and ok
    return 0 if ok else 1


def check_report(name: str, card_gib: float) -> bool:
    """Print one report's rows with their predictions; False where a verdict or a memory figure is off."""
    matrix = load_matrix(PACKAGED / f"{name}.toml")
    rows = [row for section in matrix.sections for row in section.rows]
    cells = list({row.cell.cell_id: row.cell for row in rows}.values())
    predicted = dict(zip((c.cell_id for c in cells), predict_cells(cells), strict=True))
    print(f"\n{name} at {card_gib} GiB per GPU")
    print("| # | row | published | predicted GiB | verdict | pred/pub mem | largest part |")
    print("|---|---|---|---|---|---|---|")
    wrong = 0
    for number, row in enumerate(rows, start=1):
        prediction = predicted[row.cell.cell_id]
        fits = prediction.fits(card_gib)
        published = "Fail" if row.published == "Fail" else f"~{row.published:g}"
        if row.published_gpu_mem_gb is not None:
            published += f", {row.published_gpu_mem_gb:g} GB"
        agrees = fits == (row.published != "Fail")
        verdict = ("fits" if fits else "Fail") + (" (agrees)" if agrees else " (WRONG)")
        memory = ""
        if row.published_gpu_mem_gb is not None:
            ratio = prediction.peak_gib / row.published_gpu_mem_gb
            memory = f"{ratio:.2f}" + ("" if abs(ratio - 1) <= MEMORY_TOLERANCE else " (off)")
            agrees = agrees and abs(ratio - 1) <= MEMORY_TOLERANCE
        if row.not_run is not None:
            verdict, memory = f"not run; its {row.cell.backbone} cell {verdict.split()[0]}", memory and f"({memory})"
        else:
            wrong += not agrees
        part = prediction.largest_part()
        print(
            f"| {number} | {describe(row.cell, row.labels)} | {published} | {prediction.peak_gib:.2f} | {verdict} "
            f"| {memory} | {part} {prediction.parts[part] / 2**30:.1f} |"
        )
    print(
        f"{name}: {len(rows) - wrong - len(matrix.not_run_rows())} rows agree, {wrong} do not, {len(matrix.not_run_rows())} not run"
    )
    return wrong == 0


def describe(cell: Cell, labels: dict[str, str]) -> str:
    backbone = labels.get("Backbone", cell.backbone)
    pfc = f" pfc {cell.sample_rate:g}" if cell.sample_rate < 1 else ""
    tf32 = " tf32" if cell.tf32 else ""
    return f"{backbone} {cell.classes:,} cls, batch {cell.batch_size}, {cell.precision}{tf32}{pfc}"


def v100_readme() -> bool:
    """The V100 README table, MB per GPU; False where a figure is more than the tolerance off."""
    cells = [
        Cell(
            backbone="r50",
            classes=classes,
            batch_size=512,
            nproc_per_node=8,
            precision="fp16",
            sample_rate=rate,
            impl=IMPL,
            label_mode="constant",
        )
        for classes, rate in V100_MB
    ]
    worst = 0.0
    print("| classes | sample rate | published MB | predicted MB | ratio | classifier MB |")
    print("|---|---|---|---|---|---|")
    for cell, prediction in zip(cells, predict_cells(cells), strict=True):
        published = V100_MB[cell.classes, cell.sample_rate]
        predicted = prediction.peak_bytes / 1e6
        classifier = (prediction.parts[CLASSIFIER_STATE] + prediction.parts[CLASSIFIER_TEMPORARIES]) / 1e6
        worst = max(worst, abs(predicted / published - 1))
        print(
            f"| {cell.classes} | {cell.sample_rate} | {published} | {predicted:.0f} | {predicted / published:.2f} "
            f"| {classifier:.0f} |"
        )
    print(f"worst deviation {worst:.1%}")
    return worst <= MEMORY_TOLERANCE


if __name__ == "__main__":
    sys.exit(main())
