"""The ResNets of SimCLR v2: wider (1x-3x) and selective-kernel (SK) ResNet-50/101/152.

Chen, Kornblith, Swersky, Norouzi, Hinton. "Big Self-Supervised Models are Strong Semi-Supervised
Learners", NeurIPS 2020, arXiv:2006.10029, sec. 2 and Table 1. Follows the official ``tf2/resnet.py``:

- a width multiplier ``w`` scales every channel count (stem ``64w``, stages ``64w .. 512w`` wide,
  outputs four times that), unlike torchvision's ``wide_resnet50_2``, which widens only the inner
  convolutions of each bottleneck;
- SK (Li et al. 2019, arXiv:1903.06586) with ratio 1/16: each bottleneck's 3x3 convolution becomes two
  3x3 streams (one convolution with twice the channels, BN, ReLU) mixed per channel by a softmax over
  attention logits from the globally pooled sum of the streams (1x1 conv to ``max(C/16, 32)``, BN,
  ReLU, 1x1 conv); with SK the network also takes ResNet-D's changes (He et al. 2019,
  "Bag of Tricks", arXiv:1812.01187): a stem of three 3x3 convolutions and projection shortcuts that average-pool
  before a stride-1 1x1 convolution.

Registered as ``r50-{1,2,3}x`` and ``r50-{1,2,3}x-sk`` (e.g. ``r50-2x-sk``). Module names
follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv2``, ``downsample`` ...), so an
``r50-1x`` state dict loads into ``torchvision.models.resnet50`` unchanged.

Deviations: torchvision's initialization (Kaiming normal, fan-out) instead of TF's variance scaling;
the last BN of each block starts at zero only with ``zero_init_residual`` (the official code always
does this; the SimCLR v2 preset sets it); max-pool padding is PyTorch's symmetric one (TF pads 'SAME').
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .registry import BACKBONES

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
SK_RATIO = 0.0625


class SKConv(nn.Module):
    """Selective-kernel 3x3 convolution of SimCLR v2 (``SK_Conv2D``), BN and ReLU included."""

    def __init__(self, channels: int, stride: int, sk_ratio: float = SK_RATIO, min_dim: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 2 * channels, 3, stride, 1, bias=False)  # both streams at once
        self.bn = nn.BatchNorm2d(2 * channels)
        mid = max(int(channels * sk_ratio), min_dim)
        self.fc1 = nn.Conv2d(channels, mid, 1, bias=False)
        self.fc_bn = nn.BatchNorm2d(mid)
        self.fc2 = nn.Conv2d(mid, 2 * channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        streams = F.relu(self.bn(self.conv(x))).unflatten(1, (2, -1))  # (n, 2, c, h, w)
        squeeze = streams.sum(1).mean((2, 3), keepdim=True)
        logits = self.fc2(F.relu(self.fc_bn(self.fc1(squeeze)))).unflatten(1, (2, -1))
        return (streams * logits.softmax(dim=1)).sum(1)


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, sk: bool, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        if sk:  # the SK convolution carries its own BN and ReLU
            self.conv2, self.bn2 = SKConv(planes, stride), nn.Identity()
        else:
            self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def _shortcut(inplanes: int, out: int, stride: int, resnet_d: bool) -> nn.Sequential:
    if not resnet_d:
        return nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
    # TF: stride 2 pads one zero row/column at the end then pools 2x2 'VALID'; stride 1 pools 2x2
    # 'SAME' without counting the padding, which replicate-padding the end reproduces exactly.
    if stride > 1:
        pool = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.AvgPool2d(2, stride))
    else:
        pool = nn.Sequential(nn.ReplicationPad2d((0, 1, 0, 1)), nn.AvgPool2d(2, 1))
    return nn.Sequential(pool, nn.Conv2d(inplanes, out, 1, bias=False), nn.BatchNorm2d(out))


class WideSKResNet(nn.Module):
    """Bottleneck ResNet with every width scaled by ``width`` and optional SK (pooled features out)."""

    def __init__(self, depth: int = 50, width: int = 1, sk: bool = False, cifar_stem: bool = False) -> None:
        super().__init__()
        c = 64 * width
        if cifar_stem:
            self.conv1 = nn.Conv2d(3, c, 3, 1, 1, bias=False)
        elif sk:
            h = c // 2
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, h, 3, 2, 1, bias=False),
                nn.BatchNorm2d(h),
                nn.ReLU(inplace=True),
                nn.Conv2d(h, h, 3, 1, 1, bias=False),
                nn.BatchNorm2d(h),
                nn.ReLU(inplace=True),
                nn.Conv2d(h, c, 3, 1, 1, bias=False),
            )
        else:
            self.conv1 = nn.Conv2d(3, c, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar_stem else nn.MaxPool2d(3, 2, 1)
        inplanes = c
        for i, (blocks, stride) in enumerate(zip(DEPTHS[depth], (1, 2, 2, 2))):
            planes = 64 * width * 2**i
            first = Bottleneck(inplanes, planes, stride, sk, _shortcut(inplanes, 4 * planes, stride, sk))
            rest = [Bottleneck(4 * planes, planes, 1, sk, None) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(first, *rest))
            inplanes = 4 * planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def _build(depth: int, width: int, sk: bool, cifar_stem: bool = False, zero_init_residual: bool = False):
    model = WideSKResNet(depth, width, sk, cifar_stem)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
    return model


# Registered: the ResNet-50 family. R101/R152 (paper Table 1, up to R152-3x-SK, 795M parameters) are
# ``WideSKResNet(depth, width, sk)``; left out of the registry because every registered backbone is
# built by the registry-wide tests (the largest take ~20 s each on a CPU).
for _depth in (50,):
    for _width in (1, 2, 3):
        BACKBONES.register(f"r{_depth}-{_width}x")(partial(_build, _depth, _width, False))
        BACKBONES.register(f"r{_depth}-{_width}x-sk")(partial(_build, _depth, _width, True))
