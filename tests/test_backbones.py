"""Tests for the arcface_torch backbones: shapes, gradients, sizes, precision and FLOPs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.workload.backbones import BACKBONES, build_backbone
from bench.workload.sizes import (
    ACTIVATIONS_PER_SAMPLE,
    FIRST_CONV_MACS_PER_SAMPLE,
    MACS_PER_SAMPLE,
    backbone_macs_per_sample,
    backbone_parameters,
)

PARAMS = {
    "r18": 24_025_600,
    "r34": 34_139_328,
    "r50": 43_590_848,
    "r100": 65_156_160,
    "r200": 118_833_920,
    "mbf": 2_059_520,
    "none": 1,
}
"""Parameter counts at embedding 512, measured; r50 is arcface_torch's 43.6M."""

FAST = ("r18", "r34", "r50", "mbf", "none")
"""Backbones cheap enough to run forward and backward on CPU in a test."""


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 112, 112, generator=torch.Generator().manual_seed(0))


def _count(model: nn.Module) -> dict[str, int]:
    """In one forward of a 112x112 image on meta: the multiply-adds of every Conv2d and Linear, those of
    the first convolution, and the elements of every Conv2d, BatchNorm2d and PReLU output."""
    counts = {"macs": 0, "first conv macs": 0, "activations": 0}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            macs = out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
            counts["first conv macs"] = counts["first conv macs"] or macs
        elif isinstance(module, nn.Linear):
            macs = out.numel() * module.in_features
        else:
            macs = 0
        counts["macs"] += macs
        counts["activations"] += out.numel() if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.PReLU)) else 0

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.PReLU)):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.empty(1, 3, 112, 112, device="meta"))
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("name", FAST)
def test_forward_maps_batch_to_embeddings_with_gradients(name: str) -> None:
    torch.manual_seed(0)
    model = build_backbone(name, 512)
    out = model(_images())
    assert out.shape == (2, 512)
    assert out.dtype == torch.float32
    out.square().mean().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)


@pytest.mark.parametrize("name", BACKBONES)
def test_parameter_count(name: str) -> None:
    with torch.device("meta"):
        model = build_backbone(name, 512)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def test_r50_matches_arcface_torch_size() -> None:
    with torch.device("meta"):
        count = sum(p.numel() for p in build_backbone("r50", 512).parameters())
    assert count == pytest.approx(43.6e6, rel=0.01)


@pytest.mark.parametrize("name", ["r18", "mbf", "none"])
def test_embedding_size_sets_output_width(name: str) -> None:
    with torch.device("meta"):
        model = build_backbone(name, 128)
    assert model(torch.empty(2, 3, 112, 112, device="meta")).shape == (2, 128)


@pytest.mark.parametrize("name", ["r18", "r50"])
def test_iresnet_embedding_batchnorm_weight_is_frozen_at_one(name: str) -> None:
    features = build_backbone(name, 512).features
    assert isinstance(features, nn.BatchNorm1d)
    assert not features.weight.requires_grad
    assert torch.equal(features.weight, torch.ones(512))
    assert features.bias.requires_grad


def _record_dtypes(trunk_conv: nn.Module, head: nn.Module) -> dict[str, torch.dtype]:
    """Hook the dtype a trunk conv computes in and the dtype the fp32 head receives."""
    seen: dict[str, torch.dtype] = {}

    def trunk_hook(module: nn.Module, inputs: tuple[torch.Tensor], out: torch.Tensor) -> None:
        seen["trunk"] = out.dtype

    def head_hook(module: nn.Module, inputs: tuple[torch.Tensor], out: torch.Tensor) -> None:
        seen["head"] = inputs[0].dtype

    trunk_conv.register_forward_hook(trunk_hook)
    head.register_forward_hook(head_hook)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("name", ["r18", "mbf"])
def test_bf16_autocast_covers_trunk_only(name: str) -> None:
    model = build_backbone(name, 512, autocast_dtype=torch.bfloat16)
    if name == "mbf":
        seen = _record_dtypes(model.layers[-1].layers[-1].layers[1], model.conv_sep)
    else:
        seen = _record_dtypes(model.layer4[-1].conv2, model.fc)
    out = model(_images())
    assert seen == {"trunk": torch.bfloat16, "head": torch.float32}
    assert out.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_none_needs_no_image_and_trains_its_scale() -> None:
    model = build_backbone("none", 512, autocast_dtype=torch.bfloat16)
    out = model(torch.empty(5, 1))
    assert out.shape == (5, 512)
    assert out.dtype == torch.float32
    assert out.requires_grad
    out.sum().backward()
    assert model.scale.grad is not None
    assert not any(isinstance(m, nn.Conv2d) for m in model.modules())


@pytest.mark.parametrize("name", sorted(MACS_PER_SAMPLE))
def test_the_size_tables_match_what_the_model_counts(name: str) -> None:
    with torch.device("meta"):
        model = build_backbone(name, 512)
    counts = _count(model)
    assert counts["macs"] == pytest.approx(MACS_PER_SAMPLE[name], rel=0.005)
    assert counts["first conv macs"] == FIRST_CONV_MACS_PER_SAMPLE[name]
    assert counts["activations"] == ACTIVATIONS_PER_SAMPLE[name]


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("embedding_size", [512, 128])
def test_the_sizes_follow_the_embedding_size(name: str, embedding_size: int) -> None:
    with torch.device("meta"):
        model = build_backbone(name, embedding_size)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert backbone_parameters(name, embedding_size) == trained
    if name != "none":
        counted = _count(model)["macs"]
        assert backbone_macs_per_sample(name, embedding_size) == pytest.approx(counted, rel=0.005)


def test_flops_cover_every_real_backbone() -> None:
    assert set(MACS_PER_SAMPLE) == set(BACKBONES) - {"none"}


def test_unknown_name_raises_with_allowed_names() -> None:
    with pytest.raises(ValueError, match="r18, r34, r50, r100, r200, mbf, none"):
        build_backbone("resnet50", 512)
