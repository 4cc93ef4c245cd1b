"""torchvision ResNets returning pooled features, with an optional CIFAR stem."""

from __future__ import annotations

from functools import partial

import torchvision.models as tvm
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from .registry import BACKBONES


def apply_cifar_stem(model: ResNet) -> ResNet:
    """The stem used for 32x32 images since the ResNet paper's CIFAR models and SimCLR's CIFAR
    runs: a 3x3 convolution with stride 1 and no max-pool."""
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def _resnet(factory, cifar_stem: bool = False, zero_init_residual: bool = False, **ignored) -> ResNet:
    model = factory(weights=None, zero_init_residual=zero_init_residual)
    model.num_features = model.fc.in_features
    model.fc = nn.Identity()
    if cifar_stem:
        apply_cifar_stem(model)
    return model


def _resnet10(**kwargs) -> ResNet:
    """A ResNet-10 (one BasicBlock per stage) for tests and quick CPU runs."""
    kwargs.pop("weights", None)
    return ResNet(BasicBlock, [1, 1, 1, 1], **kwargs)


for _name, _factory in {
    "resnet10": _resnet10,
    "resnet18": tvm.resnet18,
    "resnet34": tvm.resnet34,
    "resnet50": tvm.resnet50,
    "resnet101": tvm.resnet101,
    "resnet152": tvm.resnet152,
    "wide_resnet50_2": tvm.wide_resnet50_2,
    "wide_resnet101_2": tvm.wide_resnet101_2,
}.items():
    BACKBONES.register(_name)(partial(_resnet, _factory))
