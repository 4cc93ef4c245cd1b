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
    side = 28 if "patch14" in name else 32  # a whole number of patches
    x = torch.randn(2, 3, side, side)
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


def _resnet18_params(w: int) -> int:
    """Parameters of a ResNet-18 of base width ``w`` with the 3x3 CIFAR stem, counted by hand: convs
    without bias, two per BN (scale and shift), 1x1 projection shortcuts where the width changes."""
    total = 3 * 3 * 3 * w + 2 * w  # stem conv + BN
    cin = w
    for i in range(4):
        c = w * 2**i
        for _ in range(2):
            total += 9 * cin * c + 2 * c + 9 * c * c + 2 * c
            if cin != c:
                total += cin * c + 2 * c
            cin = c
    return total


@pytest.mark.parametrize("width", [16, 64])
def test_narrow_resnet18_has_the_hand_counted_parameters_and_torchvision_keys(width):
    m = build_backbone("resnet18", cifar_stem=True, width=width)
    assert m.num_features == 8 * width
    assert sum(p.numel() for p in m.parameters()) == _resnet18_params(width)
    assert [c.out_channels for c in (m.conv1, m.layer1[0].conv2, m.layer4[1].conv2)] == [width, width, 8 * width]
    plain = build_backbone("resnet18", cifar_stem=True)
    assert list(m.state_dict()) == list(plain.state_dict())
    assert m.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 8 * width)


def test_narrow_resnet_keeps_zero_init_residual():
    m = build_backbone("resnet50", width=16, zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in m.modules() if hasattr(b, "bn3"))
    assert m.num_features == 16 * 8 * 4
