"""The impls a cell can time, each built here from its step and classifier classes and its cost.

bench.impls names them without torch and looks them up here (load_impl) inside a rank or a trace.
"""

from __future__ import annotations

from bench.impls import IMPLS
from bench.workload import cost
from bench.workload.fused import FusedPartialFC
from bench.workload.impl import ImplSpec
from bench.workload.partial_fc import PartialFC
from bench.workload.partial_fc_2021 import PartialFC2021
from bench.workload.partial_fc_2022 import PartialFC2022, TrainStep2022
from bench.workload.passes import margin_pass, pass_2021, pass_2022
from bench.workload.step import TrainStep
from bench.workload.step_2021 import TrainStep2021

SPECS: dict[str, ImplSpec] = {
    spec.name: spec
    for spec in (
        ImplSpec(
            name="arcface_torch",
            step=TrainStep,
            classifier=PartialFC,
            classifier_pass=margin_pass(PartialFC),
            cost=cost.ARCFACE_TORCH,
            summary="arcface_torch's train_v2.py with PartialFC_V2",
        ),
        ImplSpec(
            name="arcface_torch_2021",
            step=TrainStep2021,
            classifier=PartialFC2021,
            classifier_pass=pass_2021,
            cost=cost.ARCFACE_TORCH_2021,
            summary="arcface_torch's August 2021 train.py with Partial FC v1",
        ),
        ImplSpec(
            name="arcface_torch_2022",
            step=TrainStep2022,
            classifier=PartialFC2022,
            classifier_pass=pass_2022,
            cost=cost.ARCFACE_TORCH_2022,
            summary="arcface_torch's January 2022 train.py with the autograd Partial FC over the same memory bank",
        ),
        ImplSpec(
            name="fused",
            step=TrainStep,
            classifier=FusedPartialFC,
            classifier_pass=margin_pass(FusedPartialFC),
            cost=cost.FUSED,
            summary="train_v2.py with pfcbench's fused classifier",
        ),
    )
}
"""Every impl's spec by name, in the order of bench.impls.IMPLS."""

assert tuple(SPECS) == IMPLS, "bench.impls.IMPLS and the registry list different impls"
