"""The training step that one benchmark cell times: backbone, margin, Partial FC, optimizer."""

from bench.workload.classifiers import build_classifier
from bench.workload.fused import FusedPartialFC
from bench.workload.margin import CombinedMarginLoss
from bench.workload.partial_fc import PartialFC

__all__ = ["CombinedMarginLoss", "FusedPartialFC", "PartialFC", "build_classifier"]
