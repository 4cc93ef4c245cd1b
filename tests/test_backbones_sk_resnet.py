"""SimCLR v2's wide and selective-kernel ResNets (backbones/sk_resnet.py) against the paper, torchvision and loops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.backbones.sk_resnet import SKConv, _shortcut


@pytest.mark.parametrize("name, millions", [("r50-1x", 24), ("r50-1x-sk", 35), ("r50-2x", 94), ("r50-2x-sk", 140)])
def test_sk_resnet_parameter_counts_match_the_paper(name, millions):
    with torch.device("meta"):  # SimCLR v2 Table 1 (ResNet-50 rows), without building real weights
        model = build_backbone(name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == millions
    assert model.num_features == 2048 * int(name[4])


def test_r50_1x_is_torchvision_resnet50():
    torch.manual_seed(0)
    ours = build_backbone("r50-1x").eval()
    plain = torchvision.models.resnet50()
    plain.fc = nn.Identity()
    plain.load_state_dict(ours.state_dict())  # same keys and shapes
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), ours(x))


def test_sk_conv_matches_an_independent_computation():
    torch.manual_seed(0)
    sk = SKConv(4, stride=2, min_dim=3).eval()
    for bn in (sk.bn, sk.fc_bn):
        with torch.no_grad():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 4, 6, 6)

    def bn_eval(y, bn):
        return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)

    with torch.no_grad():
        full = F.relu(bn_eval(F.conv2d(x, sk.conv.weight, stride=2, padding=1), sk.bn))
        a, b = full[:, :4], full[:, 4:]  # the two 3x3 streams
        s = (a + b).mean((2, 3), keepdim=True)
        z = F.relu(bn_eval(F.conv2d(s, sk.fc1.weight), sk.fc_bn))
        logits = F.conv2d(z, sk.fc2.weight)
        wa = torch.exp(logits[:, :4]) / (torch.exp(logits[:, :4]) + torch.exp(logits[:, 4:]))
        expected = wa * a + (1 - wa) * b
        torch.testing.assert_close(sk(x), expected)


def test_resnet_d_shortcut_pools_as_tensorflow():
    """Stride 1: 2x2 'SAME' average that ignores the padded border; stride 2: zero-padded 'VALID'."""
    x = torch.randn(1, 1, 5, 5)
    for stride in (1, 2):
        block = _shortcut(1, 1, stride, resnet_d=True)
        pooled = block[0](x)
        out = (5 + 1) // 2 if stride == 2 else 5
        expected = torch.zeros(1, 1, out, out)
        for i in range(out):
            for j in range(out):
                r, c = i * stride, j * stride
                cells = [(r + a, c + b) for a in (0, 1) for b in (0, 1)]
                if stride == 1:  # average over the cells inside the image
                    vals = [x[0, 0, p, q] for p, q in cells if p < 5 and q < 5]
                    expected[0, 0, i, j] = sum(vals) / len(vals)
                else:  # zero padding counted
                    expected[0, 0, i, j] = sum(x[0, 0, p, q] for p, q in cells if p < 5 and q < 5) / 4
        torch.testing.assert_close(pooled, expected)
