"""Face-recognition backbones as arcface_torch builds them: IResNet, MobileFaceNet, and none.

Module and attribute names follow arcface_torch's backbones/iresnet.py and
backbones/mobilefacenet.py, so state_dict keys match theirs. Mixed precision follows their
fp16 path: the conv trunk runs under autocast, the embedding head in fp32 on ``x.float()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from bench.config import BACKBONES

IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
}
"""IBasicBlocks in each of the four IResNet stages (their sizes: bench.workload.sizes)."""


def _autocast(x: torch.Tensor, dtype: torch.dtype | None) -> AbstractContextManager[object]:
    """Autocast on x's device in dtype; a no-op when dtype is None, so meta tensors work too."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=x.device.type, dtype=dtype)


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation residual block: BN, conv3x3, BN, PReLU, conv3x3 (strided), BN."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        out += x if self.downsample is None else self.downsample(x)
        return out


def _make_stage(inplanes: int, planes: int, blocks: int) -> nn.Sequential:
    """One stride-2 IResNet stage; its first block carries the conv1x1+BN shortcut."""
    downsample = nn.Sequential(_conv1x1(inplanes, planes, 2), nn.BatchNorm2d(planes, eps=1e-5))
    first = IBasicBlock(inplanes, planes, 2, downsample)
    return nn.Sequential(first, *(IBasicBlock(planes, planes) for _ in range(blocks - 1)))


class IResNet(nn.Module):
    """arcface_torch's IResNet for 112x112 faces, ending in a frozen-scale BatchNorm1d embedding."""

    def __init__(
        self,
        layers: Sequence[int],
        embedding_size: int = 512,
        autocast_dtype: torch.dtype | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.autocast_dtype = autocast_dtype
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        self.layer1 = _make_stage(64, 64, layers[0])
        self.layer2 = _make_stage(64, 128, layers[1])
        self.layer3 = _make_stage(128, 256, layers[2])
        self.layer4 = _make_stage(256, 512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * 7 * 7, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _autocast(x, self.autocast_dtype):
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x.float()))


class ConvBlock(nn.Module):
    """Conv (no bias), BN, PReLU."""

    def __init__(
        self,
        in_c: int,
        out_c: int,
        kernel: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_c),
            nn.PReLU(out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LinearBlock(nn.Module):
    """Conv (no bias) and BN with no activation."""

    def __init__(
        self,
        in_c: int,
        out_c: int,
        kernel: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand to `groups` channels, depthwise 3x3, linear 1x1 project."""

    def __init__(self, in_c: int, out_c: int, residual: bool = False, stride: int = 2, groups: int = 1) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_c, groups),
            ConvBlock(groups, groups, kernel=3, stride=stride, padding=1, groups=groups),
            LinearBlock(groups, out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    """A run of stride-1 residual DepthWise blocks at constant width."""

    def __init__(self, c: int, num_block: int, groups: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *(DepthWise(c, c, residual=True, stride=1, groups=groups) for _ in range(num_block))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise 7x7 conv, then Linear (no bias) and BatchNorm1d to the embedding."""

    def __init__(self, embedding_size: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(512, 512, kernel=7, groups=512),
            nn.Flatten(),
            nn.Linear(512, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _mbf_trunk(blocks: Sequence[int], scale: int) -> nn.ModuleList:
    """MobileFaceNet's conv layers from the image to 7x7; group widths are fixed as upstream."""
    c1, c2 = 64 * scale, 128 * scale
    if blocks[0] == 1:
        second: nn.Module = ConvBlock(c1, c1, kernel=3, padding=1, groups=64)
    else:
        second = Residual(c1, blocks[0], groups=128)
    return nn.ModuleList(
        [
            ConvBlock(3, c1, kernel=3, stride=2, padding=1),
            second,
            DepthWise(c1, c1, stride=2, groups=128),
            Residual(c1, blocks[1], groups=128),
            DepthWise(c1, c2, stride=2, groups=256),
            Residual(c2, blocks[2], groups=256),
            DepthWise(c2, c2, stride=2, groups=512),
            Residual(c2, blocks[3], groups=256),
        ]
    )


class MobileFaceNet(nn.Module):
    """arcface_torch's MobileFaceNet (get_mbf): the trunk under autocast, conv_sep and GDC in fp32."""

    def __init__(
        self,
        embedding_size: int = 512,
        autocast_dtype: torch.dtype | None = None,
        blocks: Sequence[int] = (1, 4, 6, 2),
        scale: int = 2,
    ) -> None:
        super().__init__()
        self.autocast_dtype = autocast_dtype
        self.layers = _mbf_trunk(blocks, scale)
        self.conv_sep = ConvBlock(128 * scale, 512)
        self.features = GDC(embedding_size)
        self._initialize_weights()

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _autocast(x, self.autocast_dtype):
            for layer in self.layers:
                x = layer(x)
        return self.features(self.conv_sep(x.float()))


class NoBackbone(nn.Module):
    """Random embeddings in place of a backbone, so a benchmark can time the classifier alone.

    `scale` exists because DistributedDataParallel refuses a module with no parameter that
    requires grad; multiplying the noise by it also makes the output require grad, so the
    classifier's backward runs in full and DDP has one scalar to all-reduce.
    """

    def __init__(self, embedding_size: int) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape[0], self.embedding_size, device=x.device)
        return noise * self.scale


def build_backbone(name: str, embedding_size: int, autocast_dtype: torch.dtype | None = None) -> nn.Module:
    """Build backbone `name` (one of BACKBONES); autocast_dtype None means fp32 throughout."""
    if name in IRESNET_LAYERS:
        return IResNet(IRESNET_LAYERS[name], embedding_size, autocast_dtype)
    if name == "mbf":
        return MobileFaceNet(embedding_size, autocast_dtype)
    if name == "none":
        return NoBackbone(embedding_size)
    raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, not {name!r}")
