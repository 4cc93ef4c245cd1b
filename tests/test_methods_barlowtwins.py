"""Barlow Twins (methods/barlowtwins.py): the batch-normalized forward, the biases' and norms' learning rate."""

from __future__ import annotations

import pytest
import torch

from selfsup.app.runs import build_from_config
from selfsup.config import load_config
from selfsup.train.optim import build_optimizer, build_schedule, scaled_lr

from _util import _loop_barlow, tiny_config, tiny_views


def test_barlow_twins_forward_normalizes_embeddings_over_the_batch():
    cfg = tiny_config("barlowtwins", extra=["method.proj_hidden_dim=32", "method.proj_out_dim=5"])
    method = build_from_config(cfg)
    views = tiny_views(cfg)
    out = method(views)
    z = [method.projector(method.backbone(v)).detach() for v in views]
    zn = [(x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5) for x in z]
    _, loss_ref = _loop_barlow(zn[0], zn[1], method.cfg.lambd)
    assert out.loss.item() == pytest.approx(method.cfg.loss_scale * loss_ref, rel=1e-4)


def test_barlow_twins_biases_and_norms_get_0048_over_02_of_the_lr():
    cfg = load_config(
        "barlowtwins-imagenet",
        ["backbone.name=resnet10", "method.proj_hidden_dim=32", "method.proj_out_dim=16", "optim.warmup_epochs=0"],
    )
    method = build_from_config(cfg)
    peak = scaled_lr(cfg.optim, cfg.train.batch_size)
    assert peak == pytest.approx(0.2 * 2048 / 256)
    opt = build_optimizer(method.param_groups(), cfg.optim, peak)
    schedule = build_schedule(cfg.optim, peak, total_steps=100, steps_per_epoch=10)
    one_d = {id(p) for p in method.parameters() if p.ndim == 1}
    for step in (0, 60):
        schedule.apply(opt, step)
        weights = [g for g in opt.param_groups if not g["lars_exclude"]]
        biases = [g for g in opt.param_groups if g["lars_exclude"]]
        assert len(weights) == 1 and len(biases) == 1
        assert {id(p) for p in biases[0]["params"]} == one_d
        assert biases[0]["weight_decay"] == 0.0 and weights[0]["weight_decay"] == pytest.approx(1e-6)
        assert weights[0]["lr"] == pytest.approx(float(schedule.lr[step]))
        assert biases[0]["lr"] == pytest.approx(weights[0]["lr"] * 0.0048 / 0.2)
    schedule.apply(opt, 0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2 * 8, 0.0048 * 8])  # the paper's rates x 2048/256
