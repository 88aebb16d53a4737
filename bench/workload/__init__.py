"""The training step that one benchmark cell times: backbone, margin, Partial FC, optimizer."""

from bench.workload.margin import CombinedMarginLoss
from bench.workload.partial_fc import PartialFC

__all__ = ["CombinedMarginLoss", "PartialFC"]
