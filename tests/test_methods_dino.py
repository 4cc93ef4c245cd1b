"""DINO (methods/dino.py): centring, the teacher temperature, the last layer, and a ViT teacher's determinism."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from selfsup.app.runs import build_from_config
from selfsup.backbones import BACKBONES, build_backbone
from selfsup.losses import dino_loss
from selfsup.methods import Progress
from selfsup.methods.dino import teacher_temperature, updated_center

from _util import _step, tiny_config, tiny_views


def test_center_update_by_hand():
    teacher = torch.tensor([[1.0, 2.0, 0.0], [3.0, -2.0, 4.0]])
    center = torch.tensor([[0.5, 0.5, 0.5]])
    expected = torch.tensor([[0.9 * 0.5 + 0.1 * 2.0, 0.9 * 0.5 + 0.1 * 0.0, 0.9 * 0.5 + 0.1 * 2.0]])
    torch.testing.assert_close(updated_center(center, teacher, 0.9), expected)


def test_teacher_temperature_schedule():
    ref = np.concatenate([np.linspace(0.04, 0.07, 30), np.full(70, 0.07)])
    got = [teacher_temperature(e, 0.04, 0.07, 30) for e in range(100)]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert teacher_temperature(0, 0.04, 0.07, 0) == 0.07
    # the method indexes it by the epoch of the step it is told
    cfg = tiny_config("dino", extra=["method.warmup_teacher_temp_epochs=30"])
    method = build_from_config(cfg)
    for step, epoch in [(0, 0), (7 * 10 + 9, 7), (29 * 10, 29), (40 * 10 + 3, 40)]:
        method.on_step(Progress(step, 100 * 10, 10))
        assert method._teacher_temp == pytest.approx(ref[epoch], abs=1e-12)


def test_dino_forward_centres_and_sees_only_global_views_in_the_teacher():
    cfg = tiny_config("dino", extra=["method.out_dim=64", "method.hidden_dim=32"])
    # two local crops beside the preset's global ones (dino-cifar10, as solo-learn's, has none)
    cfg.data.views.append(dataclasses.replace(cfg.data.views[0], count=2, size=8, scale=(0.05, 0.4)))
    method = build_from_config(cfg)
    views = tiny_views(cfg)
    assert len(views) > 2 and views[2].shape[-1] < views[0].shape[-1]
    with torch.no_grad():
        method.center.copy_(torch.randn_like(method.center))
    center = method.center.clone()
    out = method(views)
    with torch.no_grad():  # the teacher's pass on the two global views, by hand (BN in training mode)
        teacher = method.teacher_head(method.teacher_backbone(torch.cat(views[:2])))
    torch.testing.assert_close(method.center, 0.9 * center + 0.1 * teacher.mean(dim=0, keepdim=True))
    # the loss, per view, in evaluation mode (BN statistics independent of the grouping)
    method.eval()
    with torch.no_grad():
        out = method(views)
        student = [method.head(method.backbone(v)) for v in views]
        teacher = [method.teacher_head(method.teacher_backbone(v)) for v in views[:2]]
        ref = dino_loss(student, teacher, method.center, method._teacher_temp, 0.1)
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)


# frozen last layer: an optimizer step leaves it unchanged during the first epoch
@pytest.mark.parametrize("epoch,frozen", [(0.5, True), (1.0, False)])
def test_dino_last_layer_frozen_in_first_epoch(epoch, frozen):
    cfg = tiny_config("dino", extra=["method.out_dim=64", "method.hidden_dim=32", "method.norm_last_layer=false"])
    method = build_from_config(cfg)
    last = method.head.last_layer
    before = [p.detach().clone() for p in last.parameters()]
    mlp_before = method.head.mlp[0].weight.detach().clone()
    _step(method, cfg, epoch)
    assert not torch.equal(method.head.mlp[0].weight, mlp_before)
    assert all(torch.equal(p, b) for p, b in zip(last.parameters(), before)) == frozen


def test_dino_norm_last_layer_fixes_g_to_one():
    cfg = tiny_config("dino", extra=["method.out_dim=64", "method.hidden_dim=32"])
    method = build_from_config(cfg)
    g = method.head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.equal(g, torch.ones_like(g))
    _step(method, cfg, 1.0)
    torch.testing.assert_close(method.head.last_layer.weight.norm(dim=1), torch.ones(64))


def test_dino_on_a_vit_teacher_has_no_stochastic_depth():
    if "vit_small_patch16" not in BACKBONES:
        pytest.skip("ViT backbones are not registered")
    from selfsup.methods import build_method
    from selfsup.methods.dino import DINOConfig

    torch.manual_seed(0)
    vit = build_backbone("vit_small_patch16", img_size=32, embed_dim=48, depth=2, drop_path_rate=0.5)
    method = build_method("dino", vit, DINOConfig(out_dim=32, hidden_dim=16, bottleneck_dim=8))
    assert {m.drop_prob for m in method.backbone.modules() if hasattr(m, "drop_prob")} != {0.0}
    assert {m.drop_prob for m in method.teacher_backbone.modules() if hasattr(m, "drop_prob")} == {0.0}
    views = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)]
    with torch.no_grad():
        t1 = method.teacher_backbone(views[0])
        t2 = method.teacher_backbone(views[0])  # training mode, yet deterministic
    torch.testing.assert_close(t1, t2)
    out = method(views)
    assert math.isfinite(out.loss.item())
