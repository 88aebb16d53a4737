"""What one training step costs on one rank, without torch: FLOPs, bytes moved and collectives.

Each impl's spec (bench.workload.registry) holds an ImplCost; `step_cost(cell)` states the
step of rank 0 (the rank with the most classes) of the cell's job, whether or not the cell is
emulated. The figures are analytic, from the sizes in bench.workload.sizes:

- FLOPs are those of the matrix products and convolutions, 2 per multiply-add, forward and
  backward: what torch's FlopCounterMode counts. The backbone's are 2 x (3 x its MACs, less the
  first convolution's input gradient, which the images do not need) per sample of the rank's
  batch; the classifier's are its GEMMs of B x S x D (B the global batch, S the centres it
  computes, D the embedding size): three (the logits, then the gradients of the embeddings and
  of the centres), four for fused when it recomputes the cosines in backward. Element-wise work
  (normalisation, margin, softmax, SGD) is counted in bytes, not FLOPs.
- Bytes moved are an estimate of the device-memory traffic: for each tensor whose size grows with
  the batch, the classes or the model (activations, parameters, embeddings, logits, centres and
  their optimizer state), the number of times the step reads or writes all of it, counted pass by
  pass from the code (with ArcFace or CosFace as the cell says), times its bytes. Small tensors (per
  row maxima and sums, labels, the 1/W share of rows whose target a rank holds) are left out.
- Collectives are the ones the step calls, with the bytes of each call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bench.config import Cell
from bench.units import MIB
from bench.workload.sizes import (
    ACTIVATIONS_PER_SAMPLE,
    DEFAULT_BUDGET_BYTES,
    FIRST_CONV_MACS_PER_SAMPLE,
    backbone_macs_per_sample,
    backbone_parameters,
    num_centres,
    num_local_classes,
    plan_chunks,
)

FLOAT_BYTES = 4
HALF_BYTES = 2
LABEL_BYTES = 8
"""Bytes of a label as the classifiers gather it (int64)."""

ACTIVATION_PASSES = 4
"""Each activation is written and read once in forward, its gradient written and read once in backward."""
PARAMETER_PASSES = 6
"""Each backbone parameter is read in forward and in backward; its gradient written, read for its norm,
and scaled in place by the clipping."""
SGD_PASSES = 11
"""SGD with weight decay and momentum: the decayed gradient (2 reads, 1 write), the momentum's scale and
add (3 reads, 2 writes), the update (2 reads, 1 write)."""
EMBEDDING_PASSES = 10
"""The gathered B x D embeddings: written by the gather, normalised (3), read by the GEMMs, their gradient
written and read back to the ranks."""
BANK_PASSES = 8
"""Below rate 1, a memory bank's sampled rows and their momentum copied out (2 reads, 2 writes) and
written back (2 reads, 2 writes)."""


@dataclass(frozen=True, kw_only=True)
class Collective:
    """One kind of collective call a step makes, and how often."""

    kind: str
    """all_gather, all_reduce, reduce or reduce_scatter."""
    what: str
    """What it carries."""
    num_bytes: int
    """Bytes of one call: the gathered result of an all-gather, the reduced tensor of an all-reduce or a
    reduce, the input of a reduce-scatter."""
    calls: int = 1
    """Calls per step."""

    @property
    def total_bytes(self) -> int:
        return self.num_bytes * self.calls


@dataclass(frozen=True, kw_only=True)
class PartCost:
    """The work of one part of a step (the backbone or the classifier) on one rank."""

    flops: float
    """FLOPs of its matrix products and convolutions, forward and backward."""
    bytes_moved: Mapping[str, float]
    """Estimated bytes read and written in device memory, by the tensors they belong to."""
    collectives: tuple[Collective, ...] = ()

    @property
    def num_bytes(self) -> float:
        return sum(self.bytes_moved.values())


@dataclass(frozen=True, kw_only=True)
class StepCost:
    """One training step on one rank: forward, backward and optimizer."""

    backbone: PartCost
    classifier: PartCost

    @property
    def flops(self) -> float:
        return self.backbone.flops + self.classifier.flops

    @property
    def num_bytes(self) -> float:
        return self.backbone.num_bytes + self.classifier.num_bytes

    @property
    def collectives(self) -> tuple[Collective, ...]:
        return self.backbone.collectives + self.classifier.collectives


def backbone_flops(cell: Cell) -> float:
    """The backbone's forward and backward FLOPs on the rank's batch."""
    if cell.backbone == "none":
        return 0.0
    macs = 3 * backbone_macs_per_sample(cell.backbone, cell.embedding_size)
    return 2 * (macs - FIRST_CONV_MACS_PER_SAMPLE[cell.backbone]) * cell.per_gpu_batch


def activation_bytes(cell: Cell) -> int:
    """Bytes of one activation element: the trunk runs in fp16 or bf16 under autocast, else fp32."""
    return HALF_BYTES if cell.precision in ("fp16", "bf16") else FLOAT_BYTES


def softmax_all_reduces(cell: Cell) -> Collective:
    """The softmax cross-entropy's all-reduces across ranks, of one float per row of the global batch."""
    what = "row max, sum of exp, target probability"
    return Collective(kind="all_reduce", what=what, num_bytes=cell.batch_size * FLOAT_BYTES, calls=3)


def gather_batch_collectives(cell: Cell) -> tuple[Collective, ...]:
    """train_v2's and January 2022's: embeddings and labels gathered, the embeddings' gradient reduced
    back to each rank, and the softmax's all-reduces."""
    rows, dim, world = cell.batch_size, cell.embedding_size, cell.world_size
    return (
        Collective(kind="all_gather", what="embeddings", num_bytes=rows * dim * FLOAT_BYTES),
        Collective(kind="all_gather", what="labels", num_bytes=rows * LABEL_BYTES),
        Collective(
            kind="reduce", what="embeddings' gradient", num_bytes=cell.per_gpu_batch * dim * FLOAT_BYTES, calls=world
        ),
        softmax_all_reduces(cell),
    )


def gather_apart_collectives(cell: Cell) -> tuple[Collective, ...]:
    """August 2021's: labels and normalised features gathered apart, the softmax's all-reduces, and the
    features' gradient back by one reduce-scatter."""
    rows, dim = cell.batch_size, cell.embedding_size
    return (
        Collective(kind="all_gather", what="labels", num_bytes=rows * LABEL_BYTES),
        Collective(kind="all_gather", what="features", num_bytes=rows * dim * FLOAT_BYTES),
        softmax_all_reduces(cell),
        Collective(kind="reduce_scatter", what="features' gradient", num_bytes=rows * dim * FLOAT_BYTES),
    )


@dataclass(frozen=True, kw_only=True)
class ImplCost:
    """How an impl's step computes, as far as its cost goes: the numbers each impl's code sets."""

    ddp_gradient_bytes: int
    """Bytes per backbone parameter of DDP's gradient all-reduce (2 under a compression hook)."""
    ddp_bucket_bytes: int
    """DDP's bucket size: one all-reduce per bucket of fp32 gradients."""
    logit_passes: Mapping[str, int]
    """Reads and writes of the whole B x S logit matrix in a step, by margin."""
    centre_passes: int
    """Reads and writes of the S x D centres computed over (normalisation, GEMM operands, gradient)."""
    sampling_passes: int = 0
    """More reads and writes of them below rate 1 (the sampled rows gathered, their gradient scattered)."""
    banked: bool = False
    """Below rate 1 the centres live in a memory bank and SGD steps only the sampled rows (2021, 2022);
    else SGD steps the whole shard."""
    collectives: Callable[[Cell], tuple[Collective, ...]] = field(default=gather_batch_collectives)
    """The classifier's collectives of one step."""

    def gemms(self, cell: Cell) -> int:
        """B x S x D GEMMs a step runs: the logits, and the gradients of the embeddings and the centres."""
        return 3

    def step_cost(self, cell: Cell) -> StepCost:
        return StepCost(backbone=self.backbone_cost(cell), classifier=self.classifier_cost(cell))

    def backbone_cost(self, cell: Cell) -> PartCost:
        """The backbone's FLOPs, its activations' and parameters' traffic, and DDP's all-reduces."""
        parameters = backbone_parameters(cell.backbone, cell.embedding_size)
        activations = ACTIVATIONS_PER_SAMPLE[cell.backbone] * cell.per_gpu_batch
        buckets = max(1, math.ceil(parameters * FLOAT_BYTES / self.ddp_bucket_bytes))
        all_reduce = Collective(
            kind="all_reduce",
            what="backbone gradient",
            num_bytes=math.ceil(parameters * self.ddp_gradient_bytes / buckets),
            calls=buckets,
        )
        return PartCost(
            flops=backbone_flops(cell),
            bytes_moved={
                "activations": ACTIVATION_PASSES * activations * activation_bytes(cell),
                "parameters": PARAMETER_PASSES * parameters * FLOAT_BYTES,
                "optimizer": SGD_PASSES * parameters * FLOAT_BYTES,
            },
            collectives=(all_reduce,),
        )

    def classifier_cost(self, cell: Cell) -> PartCost:
        """The classifier's GEMMs, its logits', centres' and embeddings' traffic, and its collectives."""
        rows, dim, cols = cell.batch_size, cell.embedding_size, num_centres(cell)
        gemms = self.gemms(cell)
        sampled = cell.sample_rate < 1
        centre_passes = self.centre_passes + (self.sampling_passes if sampled else 0)
        stepped_rows = cols if self.banked else num_local_classes(cell)
        centres = {
            "centres": centre_passes * cols * dim * FLOAT_BYTES,
            "optimizer": SGD_PASSES * stepped_rows * dim * FLOAT_BYTES,
        }
        if self.banked and sampled:
            centres["memory bank"] = BANK_PASSES * cols * dim * FLOAT_BYTES
        return PartCost(
            flops=2 * gemms * rows * cols * dim,
            bytes_moved={
                "embeddings": EMBEDDING_PASSES * rows * dim * FLOAT_BYTES,
                # a GEMM recomputed in backward writes the logits once more
                "logits": (self.logit_passes[cell.margin] + gemms - 3) * rows * cols * FLOAT_BYTES,
                **centres,
            },
            collectives=self.collectives(cell),
        )


@dataclass(frozen=True, kw_only=True)
class FusedCost(ImplCost):
    """The fused classifier's: its chunk plan decides whether backward recomputes the cosines."""

    budget_bytes: int = DEFAULT_BUDGET_BYTES
    """The classifier's memory budget (FusedPartialFC's budget_bytes)."""

    def gemms(self, cell: Cell) -> int:
        cols = max(1, round(num_centres(cell)))
        plan = plan_chunks(cell.batch_size, cols, cell.embedding_size, self.budget_bytes)
        return 3 if plan.keep_cosines else 4


TRAIN_V2_DDP = {"ddp_gradient_bytes": HALF_BYTES, "ddp_bucket_bytes": 16 * MIB}
"""train_v2.py's DDP: 16 MiB buckets, gradients compressed to fp16 (bf16 for a bf16 cell)."""
DEFAULT_DDP = {"ddp_gradient_bytes": FLOAT_BYTES, "ddp_bucket_bytes": 25 * MIB}
"""DDP's defaults (the 2021 and 2022 programs): 25 MiB buckets of fp32 gradients."""

ARCFACE_TORCH = ImplCost(
    **TRAIN_V2_DDP,
    # forward: the GEMM, clamp, ArcFace's arccos and cos (no grad), times s, max, sub, exp, sum, div;
    # backward: div, times the loss gradient, times s, clamp, the two GEMMs' reads
    logit_passes={"arcface": 28, "cosface": 26},
    # normalised (a norm, a read and a write), read by the GEMMs, its gradient written and normalised back
    centre_passes=11,
    sampling_passes=4,
)
"""arcface_torch: train_v2.py with PartialFC_V2."""

FUSED = FusedCost(
    **TRAIN_V2_DDP,
    # per chunk forward: the GEMM, min and max, times s, clamp, row max, sub, exp, sum;
    # backward: times s, sub, exp, scale, the two GEMMs' reads
    logit_passes={"arcface": 22, "cosface": 22},
    # normalised per chunk in forward and again in backward, the gradient through the normalisation
    # written in place, and the shard-sized gradient zeroed
    centre_passes=20,
    sampling_passes=6,
)
"""fused: train_v2.py with the fused classifier."""

ARCFACE_TORCH_2021 = ImplCost(
    **DEFAULT_DDP,
    # forward: the GEMM, in-place arccos and cos with autograd's copies, times s, the softmax
    # cross-entropy without grad (max, sub, exp, sum, div, div); backward through cos, arccos, s, GEMM
    logit_passes={"arcface": 38, "cosface": 17},
    centre_passes=11,
    banked=True,
    collectives=gather_apart_collectives,
)
"""arcface_torch_2021: the August 2021 train.py with Partial FC v1."""

ARCFACE_TORCH_2022 = ImplCost(
    **DEFAULT_DDP,
    # forward: the GEMM, to fp32, clamp, times s, max, sub, exp, sum, div; backward: div, times the
    # loss gradient, times s, the targets' put, clamp, to the GEMM's precision, the two GEMMs' reads
    logit_passes={"arcface": 30, "cosface": 30},
    centre_passes=12,
    banked=True,
)
"""arcface_torch_2022: the January 2022 train.py with its autograd Partial FC over the memory bank."""

IMPL_COSTS: dict[str, ImplCost] = {
    "arcface_torch": ARCFACE_TORCH,
    "arcface_torch_2021": ARCFACE_TORCH_2021,
    "arcface_torch_2022": ARCFACE_TORCH_2022,
    "fused": FUSED,
}
"""Each impl's cost by name: the torch-free half of its spec (bench.workload.registry), for the parent."""


def step_cost(cell: Cell) -> StepCost:
    """One step of cell on its rank 0, without torch: what load_impl(cell.impl).step_cost(cell) states."""
    return IMPL_COSTS[cell.impl].step_cost(cell)
