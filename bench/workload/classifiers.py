"""The classifier implementations a cell can time, behind one constructor."""

from __future__ import annotations

from torch import nn

from bench.workload.emulation import EmulatedPeers
from bench.workload.fused import FusedPartialFC
from bench.workload.margin import CombinedMarginLoss
from bench.workload.partial_fc import PartialFC

CLASSIFIERS = {"arcface_torch": PartialFC, "fused": FusedPartialFC}
"""impl name -> classifier class; both take (margin, embedding_size, num_classes, sample_rate, peers)."""


def build_classifier(
    impl: str,
    margin: str,
    embedding_size: int,
    num_classes: int,
    sample_rate: float,
    peers: EmulatedPeers | None = None,
) -> nn.Module:
    """The rank's classifier: `.weight` is its shard, forward(local_embeddings, local_labels) the loss.

    Call it inside an initialised process group. The same seed gives both impls the same weights
    and, at sample_rate < 1, the same sampled centres. With peers (an emulated cell), the process
    is rank 0 of peers.world_size ranks alone.
    """
    if impl not in CLASSIFIERS:
        raise ValueError(f"impl must be one of {', '.join(CLASSIFIERS)}, not {impl!r}")
    return CLASSIFIERS[impl](CombinedMarginLoss.named(margin), embedding_size, num_classes, sample_rate, peers)
