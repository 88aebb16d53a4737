"""pfcbench's fused Partial FC: arcface_torch's loss and gradients without its B x C matrices.

The same math as PartialFC (PartialFC_V2 + CombinedMarginLoss + DistCrossEntropyFunc), computed
over chunks of the rank's (sampled) centres with an online softmax:

- the margin touches only the target entries; every other logit is s * cos;
- per row a running max and sum of exp, then the same all-reduces of B floats as arcface_torch
  (max, sum of exp, target probability), so the loss value is the same clamped one;
- backward keeps only the normalised embeddings, the row max and sum of exp and the labels;
  each chunk's cosines are recomputed (or kept, when the memory budget holds them all once),
  its gradient s (p - one_hot) / B is formed with the straight-through margin, and the chunk's
  centre gradient is written in place, through the normalisation, without a normalised copy
  of the whole shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import distributed
from torch.nn.functional import linear, normalize

from bench.workload.collectives import PROCESS_GROUP, Collectives
from bench.workload.margin import CombinedMarginLoss
from bench.workload.partial_fc import PartialFC
from bench.workload.sizes import DEFAULT_BUDGET_BYTES, ChunkPlan, plan_chunks

CPU_MAX_CHUNK_COLS = 4096
"""Most centres in one chunk on the CPU, where small chunks keep the elementwise passes in cache."""
NORM_EPS = 1e-12
"""F.normalize's floor on a norm."""


@dataclass(frozen=True)
class Targets:
    """Rows whose target centre this rank holds (rows) and its column among the centres (cols)."""

    rows: torch.Tensor
    cols: torch.Tensor

    def in_chunk(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(column within the chunk, clamped into it; whether the target is in the chunk), sync-free."""
        inside = (self.cols >= start) & (self.cols < stop)
        return (self.cols - start).clamp(0, stop - start - 1), inside


class FusedMarginSoftmax:
    """The margin logits of a chunk's cosines: s * cos, the targets with arcface_torch's margin."""

    def __init__(self, margin: CombinedMarginLoss) -> None:
        self.s, self.m2, self.m3 = margin.s, margin.m2, margin.m3

    def target_logits(self, cosine: torch.Tensor) -> torch.Tensor:
        """s * cos(arccos(t) + m2) for ArcFace, s * (t - m3) for CosFace, as CombinedMarginLoss does."""
        cosine = cosine.clamp(-1, 1)
        if self.m3 == 0.0:
            return torch.cos(torch.arccos(cosine) + self.m2) * self.s
        return (cosine - self.m3) * self.s

    def logits(
        self, cosine: torch.Tensor, targets: Targets, start: int, clamp: bool, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A chunk's margin logits (into `out`, which may be `cosine`) and its target logits (0 elsewhere).

        clamp(cos, -1, 1) * s equals clamp(s * cos, -s, s) exactly, so the clamp is skipped where
        the chunk has no cosine outside [-1, 1].
        """
        cols, inside = targets.in_chunk(start, start + cosine.size(1))
        target = torch.where(inside, self.target_logits(cosine[targets.rows, cols]), 0.0)
        logits = torch.mul(cosine, self.s, out=out) if out is not None else torch.mul(cosine, self.s)
        if clamp:
            logits.clamp_(-self.s, self.s)
        logits[targets.rows, cols] = torch.where(inside, target, logits[targets.rows, cols])
        return logits, target


def centres(weight: torch.Tensor, index: torch.Tensor | None, start: int, stop: int) -> torch.Tensor:
    """Rows start:stop of the (sampled) centres: a view at rate 1, a gathered copy of the chunk below."""
    return weight[start:stop] if index is None else weight.index_select(0, index[start:stop])


def unit_rows(chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(chunk / max(|row|, eps), |row|): F.normalize of the chunk alone, and the norms for backward."""
    norm = chunk.norm(dim=1, keepdim=True)
    return chunk / norm.clamp_min(NORM_EPS), norm


class FusedMarginSoftmaxFunc(torch.autograd.Function):
    """Loss of normalised embeddings against the rank's centres; gradients to both, arcface_torch's way."""

    @staticmethod
    def forward(ctx, embeddings, weight, labels, index, margin: FusedMarginSoftmax, plan: ChunkPlan, collectives):
        batch_size = embeddings.size(0)
        num_cols = weight.size(0) if index is None else index.numel()
        rows = torch.where(labels != -1)[0]
        targets = Targets(rows, labels[rows])
        row_max = torch.full((batch_size,), -torch.inf, device=embeddings.device)
        row_sum = torch.zeros(batch_size, device=embeddings.device)
        target_logit = torch.zeros(rows.numel(), device=embeddings.device)
        kept, bounds = [], []
        for start in range(0, num_cols, plan.chunk_cols):
            stop = min(start + plan.chunk_cols, num_cols)
            cosine = linear(embeddings, unit_rows(centres(weight, index, start, stop))[0])
            bounds.append(torch.stack(torch.aminmax(cosine)))
            # skip the clamp where no cosine needs it; that test would stall a GPU, which always clamps
            clamp = cosine.device.type != "cpu" or bool(bounds[-1][0] < -1) or bool(bounds[-1][1] > 1)
            if plan.keep_cosines:
                kept.append(cosine)
            out = None if plan.keep_cosines else cosine
            logits, target = margin.logits(cosine, targets, start, clamp, out=out)
            target_logit += target
            chunk_max = torch.maximum(row_max, logits.amax(dim=1))
            row_sum.mul_(torch.exp(row_max - chunk_max)).add_(logits.sub_(chunk_max[:, None]).exp_().sum(dim=1))
            row_max = chunk_max
        global_max = row_max.clone()
        collectives.all_reduce(global_max, distributed.ReduceOp.MAX)
        sum_exp = row_sum.mul_(torch.exp(row_max - global_max))
        collectives.all_reduce(sum_exp, distributed.ReduceOp.SUM)
        p_target = torch.zeros(batch_size, device=embeddings.device)
        p_target[rows] = torch.exp(target_logit - global_max[rows]) / sum_exp[rows]
        collectives.all_reduce(p_target, distributed.ReduceOp.SUM)
        ctx.save_for_backward(embeddings, weight, index, rows, labels[rows], global_max, sum_exp)
        bounds = torch.stack(bounds)
        # chunks with a cosine outside [-1, 1], where the clamp stops part of the gradient
        ctx.clamped = ((bounds[:, 0] < -1) | (bounds[:, 1] > 1)).tolist()
        ctx.margin, ctx.plan, ctx.kept = margin, plan, kept
        return p_target.clamp_min_(1e-30).log_().mean() * (-1)

    @staticmethod
    def backward(ctx, loss_gradient):
        embeddings, weight, index, rows, cols, global_max, sum_exp = ctx.saved_tensors
        margin, plan, kept = ctx.margin, ctx.plan, ctx.kept
        targets = Targets(rows, cols)
        num_cols = weight.size(0) if index is None else index.numel()
        scale = loss_gradient * (margin.s / embeddings.size(0))
        row_scale = (scale / sum_exp)[:, None]
        grad_embeddings = torch.zeros_like(embeddings)
        grad_weight = torch.zeros_like(weight)
        for number, start in enumerate(range(0, num_cols, plan.chunk_cols)):
            stop = min(start + plan.chunk_cols, num_cols)
            unit, norm = unit_rows(centres(weight, index, start, stop))
            cosine = kept[number] if plan.keep_cosines else linear(embeddings, unit)
            if plan.keep_cosines:
                kept[number] = None
            outside = cosine.abs() > 1 if ctx.clamped[number] else None
            margin.logits(cosine, targets, start, ctx.clamped[number], out=cosine)
            # s (p - one_hot) / B, p = exp(logit - max) / sum_exp: the straight-through margin gradient
            grad_logits = cosine.sub_(global_max[:, None]).exp_().mul_(row_scale)
            cols_in_chunk, inside = targets.in_chunk(start, stop)
            grad_logits[rows, cols_in_chunk] -= inside * scale
            if outside is not None:
                grad_logits.masked_fill_(outside, 0.0)
            grad_embeddings.addmm_(grad_logits, unit)
            write_centre_grad(grad_weight, index, start, stop, grad_logits.t() @ embeddings, unit, norm)
        return grad_embeddings, grad_weight, None, None, None, None, None


def write_centre_grad(grad_weight, index, start, stop, grad_unit, unit, norm) -> None:
    """Take a chunk's gradient through w / max(|w|, eps) and write it into its rows of grad_weight."""
    projection = (grad_unit * unit).sum(dim=1, keepdim=True) * (norm > NORM_EPS)
    grad = grad_unit.addcmul_(unit, projection, value=-1).div_(norm.clamp_min(NORM_EPS))
    if index is None:
        grad_weight[start:stop] = grad
    else:
        grad_weight.index_copy_(0, index[start:stop], grad)


class FusedPartialFC(PartialFC):
    """PartialFC's interface, shard, initial weights and sampling, with the fused loss.

    `budget_bytes` bounds the classifier's temporaries: it sets the chunk size, and whether the
    cosines are kept for backward (one B x C_local matrix) instead of recomputed.
    """

    def __init__(
        self,
        margin_loss: CombinedMarginLoss,
        embedding_size: int,
        num_classes: int,
        sample_rate: float = 1.0,
        collectives: Collectives = PROCESS_GROUP,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
    ) -> None:
        super().__init__(margin_loss, embedding_size, num_classes, sample_rate, collectives)
        self.fused_margin = FusedMarginSoftmax(margin_loss)
        self.budget_bytes = budget_bytes

    def optimizer_group(self, weight_decay: float) -> dict[str, Any]:
        """The centres' SGD parameter group, without weight decay: decay adds it to their gradient."""
        return {"params": self.parameters(), "weight_decay": 0.0}

    @torch.no_grad()
    def decay(self, weight_decay: float) -> None:
        """grad += weight_decay * weight, in place: SGD's update without the shard-sized copy of the
        gradient that its weight decay makes."""
        for param in self.parameters():
            if param.grad is not None:
                param.grad.add_(param, alpha=weight_decay)

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        num_cols = self.num_local if index is None else index.numel()
        max_cols = CPU_MAX_CHUNK_COLS if embeddings.device.type == "cpu" else None
        plan = plan_chunks(embeddings.size(0), num_cols, self.embedding_size, self.budget_bytes, max_cols)
        return FusedMarginSoftmaxFunc.apply(
            normalize(embeddings), self.weight, labels.view(-1), index, self.fused_margin, plan, self.collectives
        )
