"""How big a cell's work is on a rank, without torch: the backbones' tables, the class shard, the sampled
centres and the fused classifier's chunks.

The backbone tables are counted on the models bench.workload.backbones builds (tests/test_backbones.py
counts them again); the rest is the arithmetic the classifiers do on their sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.config import Cell
from bench.units import MIB

TABLE_EMBEDDING_SIZE = 512
"""The embedding size the backbone tables are counted at."""

MACS_PER_SAMPLE: dict[str, float] = {
    "r18": 2.61e9,
    "r34": 4.46e9,
    "r50": 6.31e9,
    "r100": 12.09e9,
    "r200": 23.42e9,
    "mbf": 0.438e9,
}
"""Forward multiply-adds of the convs and Linears for one 3x112x112 image (embedding 512).

Counted with forward hooks on Conv2d and Linear; BatchNorm, PReLU and additions are left out.
"""

FIRST_CONV_MACS_PER_SAMPLE: dict[str, int] = {
    "r18": 21_676_032,
    "r34": 21_676_032,
    "r50": 21_676_032,
    "r100": 21_676_032,
    "r200": 21_676_032,
    "mbf": 10_838_016,
}
"""Multiply-adds of the convolution that reads the image (its input needs no gradient)."""

TRAINED_PARAMETERS: dict[str, int] = {
    "r18": 24_025_088,
    "r34": 34_138_816,
    "r50": 43_590_336,
    "r100": 65_155_648,
    "r200": 118_833_408,
    "mbf": 2_059_520,
    "none": 1,
}
"""Parameters the optimizer trains at embedding 512 (IResNet's embedding BatchNorm scale is frozen)."""

ACTIVATIONS_PER_SAMPLE: dict[str, int] = {
    "r18": 11_866_624,
    "r34": 15_629_824,
    "r50": 18_038_272,
    "r100": 28_274_176,
    "r200": 49_197_568,
    "mbf": 11_265_536,
    "none": 0,
}
"""Elements of the Conv2d, BatchNorm2d and PReLU outputs of one 112x112 image's forward."""

HEAD_INPUTS: dict[str, int] = {
    "r18": 512 * 7 * 7,
    "r34": 512 * 7 * 7,
    "r50": 512 * 7 * 7,
    "r100": 512 * 7 * 7,
    "r200": 512 * 7 * 7,
    "mbf": 512,
    "none": 0,
}
"""Inputs of the Linear that makes the embedding: its multiply-adds and weights per embedding dimension."""

HEAD_PARAMETERS_PER_DIMENSION = 2
"""Trained parameters per embedding dimension beside the Linear's weights (a bias and a BatchNorm's shift,
or the BatchNorm1d's scale and shift)."""


def backbone_macs_per_sample(backbone: str, embedding_size: int) -> float:
    """Forward multiply-adds of one image at this embedding size (0 for none)."""
    if backbone == "none":
        return 0.0
    return MACS_PER_SAMPLE[backbone] + HEAD_INPUTS[backbone] * (embedding_size - TABLE_EMBEDDING_SIZE)


def backbone_parameters(backbone: str, embedding_size: int) -> int:
    """Parameters the optimizer trains at this embedding size (none trains one scalar)."""
    if backbone == "none":
        return TRAINED_PARAMETERS["none"]
    per_dimension = HEAD_INPUTS[backbone] + HEAD_PARAMETERS_PER_DIMENSION
    return TRAINED_PARAMETERS[backbone] + per_dimension * (embedding_size - TABLE_EMBEDDING_SIZE)


def shard_of(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """(first class, number of classes) that rank holds: C//W each, one more for r < C%W."""
    num_local = num_classes // world_size + int(rank < num_classes % world_size)
    class_start = num_classes // world_size * rank + min(rank, num_classes % world_size)
    return class_start, num_local


def num_local_classes(cell: Cell) -> int:
    """Classes rank 0 holds: the most of any rank."""
    return shard_of(cell.classes, cell.world_size, 0)[1]


def expected_positives(cell: Cell) -> float:
    """How many of rank 0's classes the global batch holds, on average over its labels."""
    num_local = num_local_classes(cell)
    if cell.label_mode == "constant":
        return float(num_local > 1)  # label 1 is rank 0's unless it holds class 0 alone
    return num_local * (1 - (1 - 1 / cell.classes) ** cell.batch_size)


def num_centres(cell: Cell) -> float:
    """Centres rank 0's classifier computes logits for: its shard, or below rate 1 its sample.

    The sample is int(rate x shard), or every class of the shard the batch holds if they are more
    (counted here on average).
    """
    num_local = num_local_classes(cell)
    if cell.sample_rate >= 1:
        return float(num_local)
    return max(float(int(cell.sample_rate * num_local)), expected_positives(cell))


DEFAULT_BUDGET_BYTES = 256 * MIB
"""Memory for the fused classifier's temporaries beyond the centres, their gradient and the B x D inputs."""
FLOAT_BYTES = 4


@dataclass(frozen=True)
class ChunkPlan:
    """How the centres are walked: chunk_cols at a time, and whether the cosines are kept for backward."""

    chunk_cols: int
    keep_cosines: bool


def plan_chunks(
    batch_size: int, num_cols: int, embedding_size: int, budget_bytes: int, max_cols: int | None = None
) -> ChunkPlan:
    """The largest chunk the budget holds (up to max_cols); keep the cosines if they fit too.

    A chunk of n centres needs about 3 B x n and 4 n x D floats at once (cosines, logits,
    normalised and gathered centres, their gradient).
    """
    col_bytes = FLOAT_BYTES * (3 * batch_size + 4 * embedding_size)
    kept_bytes = FLOAT_BYTES * batch_size * num_cols
    min_cols = min(num_cols, 256)
    keep = kept_bytes + col_bytes * min_cols <= budget_bytes
    free_bytes = budget_bytes - kept_bytes if keep else budget_bytes
    chunk_cols = max(1, min(num_cols, max_cols or num_cols, free_bytes // col_bytes))
    return ChunkPlan(chunk_cols=int(chunk_cols), keep_cosines=keep)
