"""Tests for the arcface_torch backbones: shapes, gradients, sizes, precision and FLOPs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.workload.backbones import BACKBONES, MACS_PER_SAMPLE, build_backbone

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


def _count_macs(model: nn.Module) -> int:
    """Multiply-adds of every Conv2d and Linear in one forward of a 112x112 image on meta."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total += out.numel() * per_output
        else:
            total += out.numel() * module.in_features

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.empty(1, 3, 112, 112, device="meta"))
    return total


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
def test_flops_per_sample_matches_counted_multiply_adds(name: str) -> None:
    with torch.device("meta"):
        model = build_backbone(name, 512)
    assert _count_macs(model) == pytest.approx(MACS_PER_SAMPLE[name], rel=0.005)


def test_flops_cover_every_real_backbone() -> None:
    assert set(MACS_PER_SAMPLE) == set(BACKBONES) - {"none"}


def test_unknown_name_raises_with_allowed_names() -> None:
    with pytest.raises(ValueError, match="r18, r34, r50, r100, r200, mbf, none"):
        build_backbone("resnet50", 512)
