"""BYOL, SimSiam and Barlow Twins: losses against independent formulas, stop-gradients, the EMA
schedule, optimizer groups, and Barlow Twins' cross-rank cross-correlation against one process."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.app.runs import build_from_config
from selfsup.config import load_config
from selfsup.losses import barlow_twins_loss, cross_correlation, negative_cosine, normalized_mse
from selfsup.methods import Progress
from selfsup.nn import ema_update
from selfsup.nn.syncbn import convert_sync_batchnorm
from selfsup.train.optim import build_optimizer, build_schedule, scaled_lr

from _dist import run_distributed
from _util import tiny_config, tiny_views

# --------------------------------------------------------------------------------------------
# losses


def test_negative_cosine_matches_a_loop_and_stops_the_target_gradient():
    torch.manual_seed(0)
    p, z = torch.randn(5, 7, requires_grad=True), torch.randn(5, 7, requires_grad=True)
    loss = negative_cosine(p, z)
    ref = 0.0
    for i in range(5):
        a, b = p[i].tolist(), z[i].tolist()
        dot = sum(x * y for x, y in zip(a, b))
        ref -= dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))) / 5
    assert abs(loss.item() - ref) < 1e-6
    loss.backward()
    assert z.grad is None, "the target side is behind a stop-gradient"
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_normalized_mse_is_the_squared_distance_of_unit_vectors():
    torch.manual_seed(1)
    p, z = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    loss = normalized_mse(p, z)
    pn = p.detach() / p.detach().norm(dim=1, keepdim=True)
    zn = z.detach() / z.detach().norm(dim=1, keepdim=True)
    torch.testing.assert_close(loss.detach(), ((pn - zn) ** 2).sum(dim=1).mean(), rtol=1e-5, atol=1e-6)
    loss.backward()
    assert z.grad is None and p.grad.abs().sum() > 0
    assert normalized_mse(zn * 3, zn).item() == pytest.approx(0.0, abs=1e-6)  # scale-invariant, 0 when aligned


# --------------------------------------------------------------------------------------------
# BYOL


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


# --------------------------------------------------------------------------------------------
# SimSiam


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


# --------------------------------------------------------------------------------------------
# Barlow Twins


def _loop_barlow(a: torch.Tensor, b: torch.Tensor, lambd: float) -> tuple[list[list[float]], float]:
    n, d = a.shape
    c = [[sum(a[k, i].item() * b[k, j].item() for k in range(n)) / n for j in range(d)] for i in range(d)]
    loss = 0.0
    for i in range(d):
        for j in range(d):
            loss += (1 - c[i][j]) ** 2 if i == j else lambd * c[i][j] ** 2
    return c, loss


def test_barlow_twins_loss_matches_a_loop():
    torch.manual_seed(2)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    c = cross_correlation(a, b)
    c_ref, loss_ref = _loop_barlow(a, b, 0.3)
    torch.testing.assert_close(c, torch.tensor(c_ref), rtol=1e-5, atol=1e-6)
    assert barlow_twins_loss(c, 0.3).item() == pytest.approx(loss_ref, rel=1e-5)


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


def _barlow_rank(rank, world, x1, x2, lambd):
    n = x1.shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    # pre-normalized embeddings: the cross-correlation and its gradient alone
    a = x1[rows].clone().requires_grad_(True)
    b = x2[rows].clone().requires_grad_(True)
    c = cross_correlation(a, b)
    barlow_twins_loss(c, lambd).backward()
    # raw embeddings through the embeddings' BN made global, as the loop runs the method under DDP
    bn = convert_sync_batchnorm(torch.nn.BatchNorm1d(x1.shape[1], affine=False), torch.device("cpu"))
    r1 = x1[rows].clone().requires_grad_(True)
    r2 = x2[rows].clone().requires_grad_(True)
    loss = barlow_twins_loss(cross_correlation(bn(r1), bn(r2)), lambd)
    loss.backward()
    # DDP averages gradients over ranks: this rank's share of one process's gradient is grad / world
    return c.detach(), loss.item(), a.grad / world, b.grad / world, r1.grad / world, r2.grad / world


def test_barlow_twins_over_two_ranks_matches_one_process():
    torch.manual_seed(3)
    x1, x2 = torch.randn(8, 5) * 2 + 1, torch.randn(8, 5) - 0.5
    lambd = 0.3

    a, b = x1.clone().requires_grad_(True), x2.clone().requires_grad_(True)
    c_full = cross_correlation(a, b)
    barlow_twins_loss(c_full, lambd).backward()
    r1, r2 = x1.clone().requires_grad_(True), x2.clone().requires_grad_(True)
    bn = torch.nn.BatchNorm1d(5, affine=False)
    loss_full = barlow_twins_loss(cross_correlation(bn(r1), bn(r2)), lambd)
    loss_full.backward()

    results = run_distributed(_barlow_rank, 2, x1, x2, lambd)
    for r, (c, loss, ga, gb, gr1, gr2) in enumerate(results):
        rows = slice(r * 4, (r + 1) * 4)
        torch.testing.assert_close(c, c_full.detach(), rtol=1e-5, atol=1e-6)
        assert loss == pytest.approx(loss_full.item(), rel=1e-5)
        torch.testing.assert_close(ga, a.grad[rows], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(gb, b.grad[rows], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(gr1, r1.grad[rows], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(gr2, r2.grad[rows], rtol=1e-4, atol=1e-6)
