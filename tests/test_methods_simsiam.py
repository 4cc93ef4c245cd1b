"""SimSiam (methods/simsiam.py): the stop-gradient loss, the paper's head shapes, the predictor's constant lr."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.app.runs import build_from_config
from selfsup.config import load_config
from selfsup.train.optim import build_optimizer, build_schedule, scaled_lr

from _util import tiny_config, tiny_views


def test_simsiam_loss_is_symmetric_negative_cosine_with_stop_gradient():
    cfg = tiny_config("simsiam", extra=["method.proj_out_dim=32", "method.pred_hidden_dim=16"])
    method = build_from_config(cfg)
    views = tiny_views(cfg)
    out = method(views)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in method.named_parameters()}
    method.zero_grad(set_to_none=True)

    z1, z2 = (method.projector(method.backbone(v)) for v in views)
    p1, p2 = method.predictor(z1), method.predictor(z2)
    ref = -(F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean()) / 2
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)
    ref.backward(retain_graph=True)
    for n, p in method.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6, msg=n)

    # without the stop-gradient the encoder would get other gradients: the check above can fail
    method.zero_grad(set_to_none=True)
    no_stop = -(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2
    no_stop.backward()
    w = method.projector[0].weight
    assert not torch.allclose(w.grad, grads["projector.0.weight"], rtol=1e-3, atol=1e-6)


def test_simsiam_projector_and_predictor_shapes_follow_the_paper():
    cfg = load_config("simsiam-imagenet", ["backbone.name=resnet10"])
    method = build_from_config(cfg)  # ResNet-10 width 512 stands in for ResNet-50's 2048
    linears = [m for m in method.projector if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 512), (512, 2048)]
    last_bn = method.projector[-1]
    assert isinstance(last_bn, torch.nn.BatchNorm1d) and not last_bn.affine
    pred = [m for m in method.predictor if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in pred] == [(2048, 512), (512, 2048)]
    cifar = load_config("simsiam-cifar10").method
    assert (cifar.proj_layers, cifar.proj_hidden_dim, cifar.proj_out_dim) == (2, 2048, 2048)


def test_simsiam_predictor_keeps_the_peak_lr_while_the_rest_decays():
    cfg = tiny_config("simsiam")
    method = build_from_config(cfg)
    groups = method.param_groups()
    pred_ids = {id(p) for p in method.predictor.parameters()}
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in method.parameters())
    peak = scaled_lr(cfg.optim, 256)
    assert peak == pytest.approx(0.03)  # the CIFAR preset: 0.03 x 256 / 256
    opt = build_optimizer(groups, cfg.optim, peak)
    schedule = build_schedule(cfg.optim, peak, total_steps=100, steps_per_epoch=10)
    for step in (0, 50, 99):
        schedule.apply(opt, step)
        for g in opt.param_groups:
            is_pred = {id(p) for p in g["params"]} <= pred_ids
            expected = peak if is_pred else float(schedule.lr[step])
            assert g["lr"] == pytest.approx(expected), (step, is_pred)
            assert g["weight_decay"] == pytest.approx(5e-4)  # every parameter decays, as in the official code
    assert float(schedule.lr[99]) < 0.01 * peak
