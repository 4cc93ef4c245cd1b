"""LARS and the schedules against hand-computed steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from selfsup.config import OptimConfig
from selfsup.methods.base import split_decay_groups
from selfsup.train.optim import LARS, build_optimizer, build_schedule, cosine_schedule, scaled_lr


def test_lars_two_steps_by_hand():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS(
        [{"params": [w]}, {"params": [b], "lars_exclude": True, "weight_decay": 0.0}],
        lr=0.1,
        momentum=0.9,
        weight_decay=0.01,
        trust_coefficient=0.001,
    )
    w.grad = torch.tensor([0.6, 0.8])  # ||g|| = 1
    b.grad = torch.tensor([2.0])
    opt.step()
    # w: g' = g + 0.01 w = [0.63, 0.84], ||g'|| = 1.05, trust = 0.001 * 5 / 1.05
    g = torch.tensor([0.63, 0.84])
    trust = 0.001 * 5 / 1.05
    v1 = 0.1 * trust * g
    torch.testing.assert_close(w.data, torch.tensor([3.0, 4.0]) - v1)
    # b: excluded -> plain momentum SGD without decay: v = 0.1 * 2
    torch.testing.assert_close(b.data, torch.tensor([1.0 - 0.2]))
    # second step: momentum carries
    w_prev = w.data.clone()
    w.grad = torch.tensor([0.6, 0.8])
    b.grad = torch.tensor([2.0])
    opt.step()
    g2 = torch.tensor([0.6, 0.8]) + 0.01 * w_prev
    trust2 = 0.001 * w_prev.norm() / g2.norm()
    v2 = 0.9 * v1 + 0.1 * trust2 * g2
    torch.testing.assert_close(w.data, w_prev - v2)
    torch.testing.assert_close(b.data, torch.tensor([0.8 - (0.9 * 0.2 + 0.2)]))


def test_lars_clip_caps_the_rate_at_the_scheduled_one():
    """apex LARC's clip mode: the step is min(lr, eta ||w|| / ||g||) * g."""
    # small gradient: trust = 0.02 * 5 / 0.01 = 10 > lr = 0.5, so the step is plain SGD's lr * g
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = LARS([w], lr=0.5, momentum=0.0, trust_coefficient=0.02, clip=True)
    w.grad = torch.tensor([0.006, 0.008])
    opt.step()
    torch.testing.assert_close(w.data, torch.tensor([3.0, 4.0]) - 0.5 * torch.tensor([0.006, 0.008]))
    # large gradient: trust = 0.02 * 5 / 10 = 0.01 < lr, so the layer moves by eta * ||w|| = 0.1
    w2 = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt2 = LARS([w2], lr=0.5, momentum=0.0, trust_coefficient=0.02, clip=True)
    w2.grad = torch.tensor([6.0, 8.0])
    opt2.step()
    torch.testing.assert_close(w2.data, torch.tensor([3.0, 4.0]) - 0.01 * torch.tensor([6.0, 8.0]))
    assert (w2.data - torch.tensor([3.0, 4.0])).norm().item() == pytest.approx(0.1)
    # without clip the small gradient gets the full trust: lr * 10 * g
    w3 = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt3 = LARS([w3], lr=0.5, momentum=0.0, trust_coefficient=0.02)
    w3.grad = torch.tensor([0.006, 0.008])
    opt3.step()
    torch.testing.assert_close(w3.data, torch.tensor([3.0, 4.0]) - 0.5 * 10 * torch.tensor([0.006, 0.008]))


def test_lars_zero_weight_norm_uses_trust_one():
    w = nn.Parameter(torch.zeros(3))
    opt = LARS([w], lr=1.0, momentum=0.0, weight_decay=0.0)
    w.grad = torch.ones(3)
    opt.step()
    torch.testing.assert_close(w.data, -torch.ones(3))


def test_bias_and_norm_parameters_are_excluded():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2, bias=False))
    groups = split_decay_groups(model.named_parameters())
    decay = {id(p) for p in groups[0]["params"]}
    assert decay == {id(model[0].weight), id(model[2].weight)}
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lars_exclude"]
    assert {id(p) for p in groups[1]["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}


@pytest.mark.parametrize("rule,expected", [("linear", 0.3 * 4096 / 256), ("sqrt", 0.3 * 64), ("none", 0.3)])
def test_lr_scaling_rules(rule, expected):
    assert scaled_lr(OptimConfig(lr=0.3, lr_scaling=rule), 4096) == pytest.approx(expected)


def test_cosine_schedule_with_warmup_by_hand():
    s = cosine_schedule(1.0, 0.0, total_steps=10, warmup_steps=4)
    np.testing.assert_allclose(s[:4], [0.0, 0.25, 0.5, 0.75])
    # cosine over the remaining 6 steps: t = 0..5 / 6
    np.testing.assert_allclose(s[4:], [0.5 * (1 + math.cos(math.pi * t / 6)) for t in range(6)])
    assert len(s) == 10 and s[4] == 1.0 and s[-1] > 0


def test_schedule_applies_per_group():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    groups = split_decay_groups(model.named_parameters())
    groups[0]["lr_scale"] = 0.5
    cfg = OptimConfig(name="sgd", lr=0.1, lr_scaling="none", weight_decay=0.04, weight_decay_end=0.4, warmup_epochs=0)
    opt = build_optimizer(groups, cfg, lr=0.1)
    sched = build_schedule(cfg, 0.1, total_steps=5, steps_per_epoch=5)
    sched.apply(opt, 0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05) and opt.param_groups[1]["lr"] == pytest.approx(0.1)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.04) and opt.param_groups[1]["weight_decay"] == 0
    sched.apply(opt, 4)
    wd4 = 0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * 4 / 5))
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(wd4)
    assert opt.param_groups[1]["weight_decay"] == 0
