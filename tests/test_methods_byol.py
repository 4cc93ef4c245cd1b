"""BYOL (methods/byol.py): the symmetric loss on the target's projections, the momentum schedule, the EMA update."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.app.runs import build_from_config
from selfsup.config import load_config
from selfsup.methods import Progress
from selfsup.nn import ema_update

from _util import tiny_config, tiny_views


def test_byol_loss_is_the_symmetric_regression_on_target_projections_of_the_other_view():
    cfg = tiny_config("byol", extra=["method.proj_hidden_dim=64", "method.pred_hidden_dim=64"])
    method = build_from_config(cfg)
    with torch.no_grad():  # make the target differ from the online network, as after training
        for p in method.target_backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for p in method.target_projector.parameters():
            p.add_(0.05 * torch.randn_like(p))
    views = tiny_views(cfg)
    out = method(views)
    out.loss.backward()

    online = [method.predictor(method.projector(method.backbone(v))) for v in views]
    with torch.no_grad():
        target = [method.target_projector(method.target_backbone(v)) for v in views]

    def nmse(p, z):  # 2 - 2cos as the squared distance of unit vectors, per row, averaged
        return ((p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)) ** 2).sum(dim=1).mean()

    ref = nmse(online[0], target[1]) + nmse(online[1], target[0])
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)
    for p in [*method.target_backbone.parameters(), *method.target_projector.parameters()]:
        assert p.grad is None and not p.requires_grad
    assert all(p.grad is not None for p in method.predictor.parameters())


def test_byol_momentum_rises_from_0996_to_1_by_cosine():
    method = build_from_config(tiny_config("byol"))
    assert method.cfg.momentum == 0.99  # the CIFAR preset; the ImageNet one uses the paper's 0.996
    method.cfg.momentum = 0.996
    at = lambda step: method.ema_momentum(Progress(step, 1000, 10))  # noqa: E731
    assert at(0) == pytest.approx(0.996, abs=1e-12)
    assert at(1000) == pytest.approx(1.0, abs=1e-12)
    assert at(500) == pytest.approx(0.998, abs=1e-12)
    assert at(250) == pytest.approx(1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2, abs=1e-12)
    assert load_config("byol-imagenet").method.momentum == 0.996


def test_byol_ema_update_matches_hand_computation():
    method = build_from_config(tiny_config("byol", extra=["method.proj_hidden_dim=32", "method.pred_hidden_dim=32"]))
    pairs = method.ema_pairs()
    assert [t for _, t in pairs] == [method.target_backbone, method.target_projector]
    with torch.no_grad():
        for online, _ in pairs:
            for p in online.parameters():
                p.add_(torch.randn_like(p))
            for b in online.buffers():
                if b.is_floating_point():
                    b.add_(1.0)
    old = [[p.clone() for p in t.parameters()] for _, t in pairs]
    tau = 0.9
    for online, target in pairs:
        ema_update(online, target, tau)
    for (online, target), before in zip(pairs, old):
        for p_t, p_o, p_old in zip(target.parameters(), online.parameters(), before):
            torch.testing.assert_close(p_t, tau * p_old + (1 - tau) * p_o)
        for b_t, b_o in zip(target.buffers(), online.buffers()):
            assert torch.equal(b_t, b_o)
