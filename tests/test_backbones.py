"""Backbones: pooled features of width num_features; ResNet weights load into plain torchvision."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from selfsup.backbones import BACKBONES, build_backbone

SMALL = [n for n in BACKBONES.names() if n in ("resnet10", "resnet18", "resnet34", "resnet50")]


@pytest.mark.parametrize("name", BACKBONES.names())
def test_num_features_matches_output(name):
    torch.manual_seed(0)
    model = build_backbone(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, model.num_features)


@pytest.mark.parametrize("name", [n for n in SMALL if n != "resnet10"])
def test_state_dict_loads_into_plain_torchvision(name):
    ours = build_backbone(name).eval()
    plain = getattr(torchvision.models, name)()
    plain.fc = nn.Identity()
    plain.load_state_dict(ours.state_dict())  # strict: same keys, same shapes
    plain.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(plain(x), ours(x))


def test_cifar_stem_keeps_resolution():
    m = build_backbone("resnet18", cifar_stem=True)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and isinstance(m.maxpool, nn.Identity)
    shapes = []

    def hook(mod, inp, out):
        shapes.append(tuple(out.shape[-2:]))

    m.layer1.register_forward_hook(hook)
    m.eval()(torch.randn(1, 3, 32, 32))
    plain = build_backbone("resnet18")
    plain.layer1.register_forward_hook(hook)
    plain.eval()(torch.randn(1, 3, 32, 32))
    assert shapes == [(32, 32), (8, 8)]  # no downsampling before layer1 with the CIFAR stem


def test_wide_resnet_width():
    assert build_backbone("wide_resnet50_2").num_features == 2048
    assert build_backbone("resnet18").num_features == 512
    with pytest.raises(KeyError, match="unknown backbone"):
        build_backbone("resnet9000")
