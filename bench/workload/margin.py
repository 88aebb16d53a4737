"""Margin-based softmax logits (ArcFace, CosFace) as arcface_torch's CombinedMarginLoss."""

from __future__ import annotations

import torch

MARGINS = {"arcface": (1.0, 0.5, 0.0), "cosface": (1.0, 0.0, 0.4)}
"""Combined margin (m1, m2, m3) for each margin name; the scale s is 64 for both."""


class CombinedMarginLoss(torch.nn.Module):
    """Turn clamped cosine logits into scaled margin logits for the rows whose label is not -1.

    ArcFace (m1=1, m3=0) adds m2 to the target angle under no_grad, so the gradient reaches the
    cosine logits as if they were s * cos(theta) everywhere (arcface_torch's straight-through).
    CosFace (m3>0) subtracts m3 from the target cosine with the gradient kept.
    """

    def __init__(self, s: float, m1: float, m2: float, m3: float) -> None:
        super().__init__()
        if m1 != 1.0:
            raise ValueError("only m1 = 1.0 (ArcFace or CosFace) is implemented")
        self.s, self.m1, self.m2, self.m3 = s, m1, m2, m3

    @classmethod
    def named(cls, name: str, s: float = 64.0) -> CombinedMarginLoss:
        if name not in MARGINS:
            raise ValueError(f"margin must be one of {', '.join(MARGINS)}, not {name!r}")
        return cls(s, *MARGINS[name])

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        index_positive = torch.where(labels != -1)[0]
        target_cols = labels[index_positive].view(-1)
        target_logit = logits[index_positive, target_cols]
        if self.m3 == 0.0:
            with torch.no_grad():
                target_logit.arccos_()
                logits.arccos_()
                logits[index_positive, target_cols] = target_logit + self.m2
                logits.cos_()
            return logits * self.s
        logits[index_positive, target_cols] = target_logit - self.m3
        return logits * self.s
