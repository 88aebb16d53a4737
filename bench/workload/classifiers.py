"""The classifier of a train_v2 impl (arcface_torch, fused), behind one constructor."""

from __future__ import annotations

from bench.impls import load_impl
from bench.workload.collectives import PROCESS_GROUP, Collectives
from bench.workload.impl import MarginClassifier
from bench.workload.margin import CombinedMarginLoss


def build_classifier(
    impl: str,
    margin: str,
    embedding_size: int,
    num_classes: int,
    sample_rate: float,
    collectives: Collectives = PROCESS_GROUP,
) -> MarginClassifier:
    """The rank's classifier: `.weight` is its shard, forward(local_embeddings, local_labels) the loss.

    Call it inside an initialised process group. The same seed gives both impls the same weights
    and, at sample_rate < 1, the same sampled centres. With EmulatedCollectives (an emulated cell),
    the process is rank 0 of their world_size ranks alone.
    """
    classifier: type[MarginClassifier] = load_impl(impl).classifier
    return classifier(CombinedMarginLoss.named(margin), embedding_size, num_classes, sample_rate, collectives)
