"""Predict the published memory figures: arcface_torch's V100 table and the RTX 3080 Fail pattern.

The V100 table (arcface_torch README of 2021, 8 x V100 32 GB, IResNet-50, fp16, global batch 512,
SyntheticDataset labels, MB per GPU as gpustat shows) is predicted with the 2021 impl and each
figure printed beside the published one. The RTX 3080 pattern is `pfcbench plan
matrices/rtx3080.toml --memory-gib 10`.

    python benchmarks/memory_published.py
"""

from __future__ import annotations

import sys

from bench.config import IMPLS, Cell
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


def main() -> int:
    if IMPL not in IMPLS:
        print(f"impl {IMPL} is not available in this version of pfcbench", file=sys.stderr)
        return 2
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
    return 0 if worst <= 0.25 else 1


if __name__ == "__main__":
    sys.exit(main())
