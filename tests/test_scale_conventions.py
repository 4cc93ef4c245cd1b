"""The official codes' scale conventions, each computed by hand the way the official code computes it:
the loss scale (SimCLR's ``loss_a + loss_b``, Barlow Twins' non-differentiable all-reduce), which
parameters are decayed and LARS-adapted, DINO's per-parameter clipping, MoCo v1's step schedule,
and the heads' details the papers' learning rates were tuned with."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.app.runs import build_from_config
from selfsup.config import OptimConfig, load_config
from selfsup.losses import barlow_twins_loss, cross_correlation
from selfsup.methods import METHODS
from selfsup.train.optim import build_optimizer, build_schedule, clip_grad

from _util import tiny_config

LARGE_NUM = 1e9


def official_simclr_loss(h1: torch.Tensor, h2: torch.Tensor, t: float) -> torch.Tensor:
    """google-research/simclr ``objective.add_contrastive_loss`` on one replica: ``loss_a + loss_b``,
    each a mean softmax cross-entropy over [ab, aa] (resp. [ba, bb]) logits, self-similarity masked."""
    h1, h2 = F.normalize(h1, dim=1), F.normalize(h2, dim=1)
    n = h1.shape[0]
    masks = torch.eye(n) * LARGE_NUM
    labels = torch.arange(n)
    logits_aa = h1 @ h1.T / t - masks
    logits_bb = h2 @ h2.T / t - masks
    logits_ab = h1 @ h2.T / t
    logits_ba = h2 @ h1.T / t
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], 1), labels)
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], 1), labels)
    return loss_a + loss_b


@pytest.mark.parametrize("name", ["simclr", "simclrv2"])
def test_simclr_loss_is_the_official_sum_of_both_directions(name):
    extra = ["method.queue_size=0"] if name == "simclrv2" else []
    cfg = tiny_config(name, extra=extra)
    torch.manual_seed(0)
    method = build_from_config(cfg)
    views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
    out = method(views)
    z = method.projector(method.backbone(torch.cat(views)))  # train-mode BN: the same batch statistics
    expected = official_simclr_loss(z[:8].double(), z[8:].double(), cfg.method.temperature)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["simclr", "simclrv2"])
def test_simclr_output_bn_has_a_scale_and_no_shift(name):
    cfg = tiny_config(name, extra=["method.queue_size=0"] if name == "simclrv2" else [])
    method = build_from_config(cfg)
    bn = method.projector[-1]
    assert isinstance(bn, nn.BatchNorm1d) and bn.weight.requires_grad and not bn.bias.requires_grad
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=1.0)
    method(list(torch.randn(2, 8, 3, 16, 16))).loss.backward()
    opt.step()
    assert torch.count_nonzero(bn.bias) == 0  # center=False: the shift stays 0
    x = torch.randn(8, bn.num_features)
    bn.train()
    expected = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + bn.eps) * bn.weight
    torch.testing.assert_close(bn(x), expected, rtol=1e-5, atol=1e-5)


def test_barlow_twins_loss_scale_reproduces_the_official_gradient_over_w_gpus():
    """Official ``main.py``: ``c = bn(z1).T @ bn(z2) / batch; torch.distributed.all_reduce(c)`` (in place,
    invisible to autograd), then DDP averages the ranks' gradients. Emulated here for W ranks in one
    process: rank r's loss sees its own partial product with a gradient and the others' detached. That
    gradient is the true one divided by W, which ``method.loss_scale = 1 / W`` reproduces."""
    torch.manual_seed(0)
    world, n, d, lambd = 4, 6, 5, 0.0051
    a, b = torch.randn(world * n, d, dtype=torch.float64), torch.randn(world * n, d, dtype=torch.float64)
    total = world * n
    parts = [(a[r * n : (r + 1) * n].T @ b[r * n : (r + 1) * n]) for r in range(world)]
    official_a, official_b = torch.zeros_like(a), torch.zeros_like(b)
    for r in range(world):
        ar, br = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        own = ar[r * n : (r + 1) * n].T @ br[r * n : (r + 1) * n]
        c = (own + sum(p for i, p in enumerate(parts) if i != r).detach()) / total
        ga, gb = torch.autograd.grad(barlow_twins_loss(c, lambd), (ar, br))
        official_a += ga / world  # DDP: the mean of the ranks' gradients
        official_b += gb / world
    ours_a, ours_b = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    loss = (1 / world) * barlow_twins_loss(cross_correlation(ours_a, ours_b), lambd)
    ga, gb = torch.autograd.grad(loss, (ours_a, ours_b))
    torch.testing.assert_close(ga, official_a)
    torch.testing.assert_close(gb, official_b)


def _groups_by_param(method: nn.Module, cfg: OptimConfig) -> dict[str, dict]:
    opt = build_optimizer(method.param_groups(), cfg, lr=0.1)
    by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
    return {n: by_id[id(p)] for n, p in method.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "name, decays_all", [("mocov1", True), ("mocov2", True), ("simsiam", True), ("swav", True), ("simclr", False)]
)
def test_which_parameters_are_decayed_and_lars_adapted(name, decays_all):
    cfg = tiny_config(name)
    method = build_from_config(cfg)
    groups = _groups_by_param(method, OptimConfig(name="lars", weight_decay=1e-4))
    bn = [n for n in groups if n.endswith(".bias") or "bn" in n]
    assert bn
    for n in bn:
        g = groups[n]
        if decays_all:
            assert g["weight_decay"] == 1e-4 and not g["lars_exclude"], n
        else:
            assert g["weight_decay"] == 0.0 and g["lars_exclude"], n
    assert METHODS.get(name).exclude_bias_norm is not decays_all


def test_moco_sgd_step_decays_a_bn_weight_as_torch_sgd_on_all_parameters():
    """``torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=1e-4)`` (main_moco.py)."""
    cfg = tiny_config("mocov1")
    torch.manual_seed(0)
    method = build_from_config(cfg)
    bn_w = method.backbone.bn1.weight
    with torch.no_grad():
        bn_w.uniform_(0.5, 1.5)
    before = bn_w.detach().clone()
    opt = build_optimizer(method.param_groups(), OptimConfig(name="sgd", weight_decay=1e-4), lr=0.1)
    for p in method.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(bn_w.detach(), before - 0.1 * 1e-4 * before)


def test_per_parameter_clipping_is_dinos_clip_gradients():
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))
    model = nn.ParameterList([a, b])
    a.grad, b.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])  # norms 5 and 0.5
    clip_grad(model, 3.0, "per_param")
    # dino utils.clip_gradients: clip_coef = 3 / (norm + 1e-6), applied where < 1
    torch.testing.assert_close(a.grad, torch.tensor([3.0, 4.0, 0.0]) * (3.0 / (5.0 + 1e-6)))
    torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.4]))
    a.grad, b.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])
    clip_grad(model, 3.0, "global")  # the norm over both: sqrt(25 + 0.25)
    scale = 3.0 / (25.25**0.5 + 1e-6)
    torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.4]) * scale)


def test_step_schedule_is_mocov1s_adjust_learning_rate():
    """main_moco.py: ``lr = args.lr; for milestone in args.schedule: lr *= 0.1 if epoch >= milestone``."""
    cfg = OptimConfig(name="sgd", lr=0.03, warmup_epochs=0, schedule="step", lr_milestones=[120, 160])
    spe, epochs = 7, 200
    sched = build_schedule(cfg, 0.03, spe * epochs, spe)
    for step in range(spe * epochs):
        epoch = step // spe
        lr = 0.03
        for milestone in (120, 160):
            lr *= 0.1 if epoch >= milestone else 1.0
        assert sched.lr[step] == pytest.approx(lr, rel=1e-12), step
    assert np.all(sched.weight_decay == cfg.weight_decay)


def test_byol_heads_end_in_a_bias_free_linear_layer():
    method = build_from_config(tiny_config("byol"))
    for head in (method.projector, method.predictor):
        assert isinstance(head[-1], nn.Linear) and head[-1].bias is None
        assert isinstance(head[1], nn.BatchNorm1d)


def test_a_vit_option_on_a_resnet_is_an_error():
    cfg = load_config("simclr-cifar10", ["backbone.name=resnet10", "backbone.pos_embed=sincos"])
    with pytest.raises(ValueError, match="backbone.pos_embed"):
        build_from_config(cfg)


def test_swav_without_sinkhorn_iterations_is_an_error():
    with pytest.raises(ValueError, match="sinkhorn_iterations"):
        build_from_config(tiny_config("swav", extra=["method.sinkhorn_iterations=0"]))
