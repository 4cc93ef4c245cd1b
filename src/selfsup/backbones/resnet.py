"""torchvision ResNets returning pooled features, with an optional CIFAR stem."""

from __future__ import annotations

from functools import partial

import torchvision.models as tvm
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .registry import BACKBONES


def apply_cifar_stem(model: ResNet) -> ResNet:
    """The stem used for 32x32 images since the ResNet paper's CIFAR models and SimCLR's CIFAR
    runs: a 3x3 convolution with stride 1 and no max-pool."""
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def narrow(model: ResNet, width: int, zero_init_residual: bool = False) -> ResNet:
    """Rebuild ``model``'s stem and stages at base width ``width`` (stages ``width x 1, 2, 4, 8``)
    with torchvision's own layer builder and initialization, so the state dict keeps its key names.
    A narrow CIFAR-stem ResNet-18 keeps the 32x32 map of the first stage at a small network's cost."""
    block = type(model.layer1[0])
    depths = [len(getattr(model, f"layer{i}")) for i in range(1, 5)]
    model.inplanes = width
    model.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = model._norm_layer(width)
    for i, depth in enumerate(depths):
        setattr(model, f"layer{i + 1}", model._make_layer(block, width * 2**i, depth, stride=1 if i == 0 else 2))
    for m in model.modules():  # torchvision's ResNet.__init__ initialization
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    if zero_init_residual:
        for m in model.modules():
            last = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else getattr(m, "bn2", None)
            if isinstance(m, Bottleneck | BasicBlock) and last is not None:
                nn.init.constant_(last.weight, 0)
    return model


def _resnet(factory, cifar_stem: bool = False, zero_init_residual: bool = False, width: int = 0) -> ResNet:
    model = factory(weights=None, zero_init_residual=zero_init_residual)
    if width:
        narrow(model, width, zero_init_residual)
    model.num_features = model.fc.in_features if not width else width * 8 * model.layer4[0].expansion
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
