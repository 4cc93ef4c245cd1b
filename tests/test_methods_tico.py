"""TiCo (losses/tico.py, methods/tico.py): the loss against a loop, the running covariance matrix C (its
update, its buffer, its global batch over two gloo processes), the momentum encoder."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.app.runs import build_from_config
from selfsup.losses import tico_loss
from selfsup.methods import Progress

from _dist import run_distributed
from _util import tiny_config, tiny_views


def _units(x: torch.Tensor) -> list[list[float]]:
    rows = x.detach().tolist()
    return [[v / math.sqrt(sum(u * u for u in r)) for v in r] for r in rows]


def loop_cov(z: torch.Tensor) -> list[list[float]]:
    """``B = mean_k u_k u_k^T`` of the l2-normalized rows, entry by entry."""
    u = _units(z)
    n, d = len(u), len(u[0])
    return [[sum(u[k][i] * u[k][j] for k in range(n)) / n for j in range(d)] for i in range(d)]


def loop_tico(z1, z2, cov_prev, beta, rho):
    """(loss, C_t) of arXiv:2206.10698 eq. (1)-(2), with lightly's +1: plain loops over floats."""
    u1, u2 = _units(z1), _units(z2)
    n, d = len(u1), len(u1[0])
    b = loop_cov(z1)
    prev = cov_prev.tolist()
    c = [[beta * prev[i][j] + (1 - beta) * b[i][j] for j in range(d)] for i in range(d)]
    inv = 1 - sum(sum(u1[k][i] * u2[k][i] for i in range(d)) for k in range(n)) / n
    con = rho * sum(sum(u1[k][i] * c[i][j] * u1[k][j] for i in range(d) for j in range(d)) for k in range(n)) / n
    return inv + con, c


def test_tico_loss_and_update_match_the_loop():
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    prev = torch.randn(4, 4) * 0.1
    out = tico_loss(z1, z2, prev, beta=0.7, rho=3.0)
    ref, c = loop_tico(z1, z2, prev, 0.7, 3.0)
    assert out.loss.item() == pytest.approx(ref, rel=1e-5)
    torch.testing.assert_close(out.cov, torch.tensor(c), rtol=1e-5, atol=1e-6)
    assert out.invariance.item() + out.contrast.item() == pytest.approx(ref, rel=1e-5)
    assert not out.cov.requires_grad


def test_tico_gradient_treats_c_as_a_constant():
    torch.manual_seed(1)
    z1 = torch.randn(5, 3, requires_grad=True)
    z2 = torch.randn(5, 3)
    prev = torch.zeros(3, 3)
    out = tico_loss(z1, z2, prev, beta=0.9, rho=8.0)
    out.loss.backward()
    # the same loss with C_t fixed (computed first, without gradient) by explicit per-row terms
    c = torch.tensor(loop_tico(z1, z2, prev, 0.9, 8.0)[1])
    x = z1.detach().clone().requires_grad_(True)
    total = x.new_zeros(())
    for k in range(5):
        u, v = x[k] / x[k].norm(), z2[k] / z2[k].norm()
        total = total + (1 - u @ v) / 5 + 8.0 * (u @ c @ u) / 5
    total.backward()
    torch.testing.assert_close(z1.grad, x.grad, rtol=1e-4, atol=1e-6)


def test_tico_covariance_buffer_follows_the_running_formula_and_resumes():
    cfg = tiny_config("tico", extra=["method.proj_hidden_dim=32", "method.proj_out_dim=6"])
    method = build_from_config(cfg)
    beta = method.cfg.beta
    assert "cov" in method.state_dict() and torch.equal(method.cov, torch.zeros(6, 6))
    expected = torch.zeros(6, 6)
    for seed in (0, 1):
        views = tiny_views(cfg, seed=seed)
        with torch.no_grad():
            z = method.projector(method.backbone(views[0]))
        method(views)
        expected = beta * expected + (1 - beta) * torch.tensor(loop_cov(z))
        torch.testing.assert_close(method.cov, expected, rtol=1e-5, atol=1e-7)
    # evaluation mode leaves C alone; a state dict carries it to a fresh method
    method.eval()
    method(tiny_views(cfg, seed=2))
    torch.testing.assert_close(method.cov, expected, rtol=1e-5, atol=1e-7)
    fresh = build_from_config(cfg)
    fresh.load_state_dict(method.state_dict())
    assert torch.equal(fresh.cov, method.cov)


def test_tico_forward_is_the_online_first_view_against_the_momentum_second():
    cfg = tiny_config("tico", extra=["method.proj_hidden_dim=32", "method.proj_out_dim=6"])
    method = build_from_config(cfg)
    with torch.no_grad():  # make the momentum encoder differ from the online network, as after training
        for p in [*method.target_backbone.parameters(), *method.target_projector.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
        method.cov.copy_(torch.eye(6) * 0.1)
    prev = method.cov.clone()
    views = tiny_views(cfg)
    with torch.no_grad():
        z = method.projector(method.backbone(views[0]))
        t = method.target_projector(method.target_backbone(views[1]))
    out = method(views)
    ref, _ = loop_tico(z, t, prev, method.cfg.beta, method.cfg.rho)
    assert out.loss.item() == pytest.approx(ref, rel=1e-5)
    out.loss.backward()
    assert all(p.grad is None for p in method.target_backbone.parameters())
    assert {"z_std", "invariance", "contrast"} <= set(out.logs)


def test_tico_momentum_rises_from_its_base_to_1_by_cosine():
    method = build_from_config(tiny_config("tico"))
    base = method.cfg.momentum
    at = lambda step: method.ema_momentum(Progress(step, 1000, 10))  # noqa: E731
    assert at(0) == pytest.approx(base, abs=1e-12)
    assert at(500) == pytest.approx((1 + base) / 2, abs=1e-12)
    assert at(1000) == pytest.approx(1.0, abs=1e-12)
    assert [t for _, t in method.ema_pairs()] == [method.target_backbone, method.target_projector]


# ---------------------------------------------------------------------------------------------
# C from the global batch: two processes, each with half the batch, against one with all of it


def _tico_rank(rank, world, batches, beta, rho):
    cov = torch.zeros(batches[0][0].shape[1], batches[0][0].shape[1])
    out = []
    for z1, z2 in batches:  # two steps: C runs on across them
        n = z1.shape[0] // world
        a = z1[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        terms = tico_loss(a, z2[rank * n : (rank + 1) * n], cov, beta, rho, gather=True)
        terms.loss.backward()
        cov = terms.cov
        out.append((terms.loss.item(), a.grad / world, cov.clone()))
    return out


def test_tico_covariance_over_two_ranks_is_the_global_batch_one():
    torch.manual_seed(2)
    batches = [(torch.randn(8, 5), torch.randn(8, 5)) for _ in range(2)]
    beta, rho = 0.6, 4.0
    cov = torch.zeros(5, 5)
    full = []
    for z1, z2 in batches:
        a = z1.clone().requires_grad_(True)
        terms = tico_loss(a, z2, cov, beta, rho)
        terms.loss.backward()
        ref, c = loop_tico(z1, z2, cov, beta, rho)
        assert terms.loss.item() == pytest.approx(ref, rel=1e-5)
        cov = terms.cov
        full.append((terms.loss.item(), a.grad, cov.clone()))
    results = run_distributed(_tico_rank, 2, batches, beta, rho)
    for step, (loss, grad, c) in enumerate(full):
        assert sum(r[step][0] for r in results) / 2 == pytest.approx(loss, rel=1e-5)
        for r in range(2):
            torch.testing.assert_close(results[r][step][2], c, rtol=1e-5, atol=1e-7)  # the same C on every rank
            torch.testing.assert_close(results[r][step][1], grad[r * 4 : (r + 1) * 4], rtol=1e-4, atol=1e-6)


def test_tico_loss_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(4)
    z1, z2, prev = torch.randn(6, 4), torch.randn(6, 4), torch.zeros(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tico_loss(z1.bfloat16(), z2.bfloat16(), prev)
    assert out.loss.dtype == torch.float32 and out.cov.dtype == torch.float32
    ref, _ = loop_tico(z1.bfloat16().float(), z2.bfloat16().float(), prev, 0.9, 8.0)
    assert out.loss.item() == pytest.approx(ref, rel=1e-5)
