"""VICReg (losses/vicreg.py, methods/vicreg.py): the three terms against loops, the official expander
layout, and the variance and covariance over the global batch on two processes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from selfsup.app.runs import build_from_config
from selfsup.losses import vicreg_loss, vicreg_terms

from _dist import run_distributed
from _util import tiny_config, tiny_views


def loop_vicreg(z1, z2, sim=25.0, std=25.0, cov=1.0, gamma=1.0, eps=1e-4):
    """The official loss (main_vicreg.py:194-220) element by element: returns (loss, inv, var, cov), each a
    0-d tensor built from scalar operations (so autograd gives its gradient too)."""
    n, d = z1.shape
    inv = sum((z1[i, k] - z2[i, k]) ** 2 for i in range(n) for k in range(d)) / (n * d)
    var_terms, cov_terms = [], []
    for z in (z1, z2):
        mean = [sum(z[i, k] for i in range(n)) / n for k in range(d)]
        c = [
            [sum((z[i, k] - mean[k]) * (z[i, m] - mean[m]) for i in range(n)) / (n - 1) for m in range(d)]
            for k in range(d)
        ]
        hinge = [torch.clamp(gamma - torch.sqrt(c[k][k] + eps), min=0.0) for k in range(d)]
        var_terms.append(sum(hinge) / d)
        cov_terms.append(sum(c[k][m] ** 2 for k in range(d) for m in range(d) if k != m) / d)
    var_t = (var_terms[0] + var_terms[1]) / 2
    cov_t = cov_terms[0] + cov_terms[1]
    return sim * inv + std * var_t + cov * cov_t, inv, var_t, cov_t


def test_vicreg_hand_computed():
    # two images, two dimensions; each dimension's std is sqrt(2) > 1 (no hinge) and cov_01 = 2
    z1 = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    t = vicreg_terms(z1, z1.clone())
    assert (t.invariance.item(), t.variance.item()) == (0.0, 0.0)
    assert t.covariance.item() == pytest.approx(2 * (2**2 + 2**2) / 2)  # two views, (c01^2 + c10^2) / d
    # a collapsed second view: MSE 1, its std sqrt(1e-4) = 0.01 -> hinge 0.99, averaged over the two views
    loss = vicreg_loss(z1, torch.zeros(2, 2))
    assert loss.item() == pytest.approx(25 * 1.0 + 25 * 0.99 / 2 + 4.0, rel=1e-6)


def test_vicreg_terms_and_gradients_match_loops():
    torch.manual_seed(0)
    for n, d, gamma in [(6, 4, 1.0), (5, 3, 2.0), (9, 5, 0.5)]:
        # columns of different spread, so the hinge is active on some dimensions and not on others
        scale = torch.linspace(0.3, 2.5, d, dtype=torch.float64)
        a = (torch.randn(n, d, dtype=torch.float64) * scale + 1.0).requires_grad_(True)
        b = (torch.randn(n, d, dtype=torch.float64) * scale - 0.5).requires_grad_(True)
        a2, b2 = a.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
        t = vicreg_terms(a, b, gamma=gamma)
        loss = t.weighted(25.0, 25.0, 1.0)
        ref, inv, var, cov = loop_vicreg(a2, b2, gamma=gamma)
        assert 0 < var.item()  # some dimension is under the target std
        for got, want in [(t.invariance, inv), (t.variance, var), (t.covariance, cov), (loss, ref)]:
            assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
        loss.backward()
        ref.backward()
        torch.testing.assert_close(a.grad, a2.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(b.grad, b2.grad, rtol=1e-4, atol=1e-6)


def test_vicreg_loss_runs_in_float32_under_autocast():
    torch.manual_seed(1)
    a, b = torch.randn(8, 6), torch.randn(8, 6)
    ref = vicreg_loss(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = vicreg_loss(a.bfloat16(), b.bfloat16())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), rel=2e-2)  # only the inputs' rounding to bf16


def test_vicreg_expander_is_the_official_layout():
    cfg = tiny_config("vicreg", extra=["method.proj_hidden_dim=32", "method.proj_out_dim=16"])
    head = build_from_config(cfg).projector
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [32, 32, 16]
    assert [m.bias is not None for m in linears] == [True, True, False]  # Projector: bias=False on the last
    assert [type(m) for m in head][-1] is nn.Linear  # no norm, no activation on the output
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head) == 2


def test_vicreg_forward_matches_the_loop_reference():
    cfg = tiny_config("vicreg", extra=["method.proj_hidden_dim=32", "method.proj_out_dim=5"])
    method = build_from_config(cfg)
    views = tiny_views(cfg)
    out = method(views)
    with torch.no_grad():  # BN in training mode: the same batch statistics as in the forward
        z = [method.projector(method.backbone(v)).double() for v in views]
    ref, inv, var, cov = loop_vicreg(*z, std=method.cfg.std_coeff)
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-4)
    assert out.logs["invariance"].item() == pytest.approx(inv.item(), rel=1e-4)
    assert out.logs["variance"].item() == pytest.approx(var.item(), rel=1e-4, abs=1e-6)
    assert out.logs["covariance"].item() == pytest.approx(cov.item(), rel=1e-4)


# ---------------------------------------------------------------------------------------------
# two processes, each holding half of the batch


def _vicreg_rank(rank, world, x1, x2, gather):
    n = x1.shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    a = x1[rows].clone().requires_grad_(True)
    b = x2[rows].clone().requires_grad_(True)
    t = vicreg_terms(a, b, gather=gather)
    loss = t.weighted(25.0, 25.0, 1.0)
    loss.backward()
    # DDP averages gradients over ranks: this rank's share of one process's gradient is grad / world
    return [v.item() for v in t], loss.item(), a.grad / world, b.grad / world


def test_vicreg_variance_and_covariance_over_two_ranks_match_one_process():
    torch.manual_seed(3)
    x1, x2 = torch.randn(8, 5), torch.randn(8, 5)
    x1[4:] = x1[4:] * 2.5 + 1.0  # the two halves differ in spread and mean: local statistics are not global
    x2[4:] = x2[4:] * 0.4 - 1.0
    a, b = x1.clone().requires_grad_(True), x2.clone().requires_grad_(True)
    full = vicreg_terms(a, b)
    full_loss = full.weighted(25.0, 25.0, 1.0)
    full_loss.backward()

    ranks = run_distributed(_vicreg_rank, 2, x1, x2, True)
    for r, ((_, var, cov), _, ga, gb) in enumerate(ranks):
        rows = slice(r * 4, (r + 1) * 4)
        assert var == pytest.approx(full.variance.item(), rel=1e-5)  # over the global batch, on every rank
        assert cov == pytest.approx(full.covariance.item(), rel=1e-5)
        torch.testing.assert_close(ga, a.grad[rows], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(gb, b.grad[rows], rtol=1e-4, atol=1e-6)
    # the invariance is each rank's own MSE (as the official code): their mean is the global one
    assert sum(r[0][0] for r in ranks) / 2 == pytest.approx(full.invariance.item(), rel=1e-5)
    assert sum(r[1] for r in ranks) / 2 == pytest.approx(full_loss.item(), rel=1e-5)

    # without the gather each rank's statistics are its own half's, and the terms differ
    local = run_distributed(_vicreg_rank, 2, x1, x2, False)
    assert not math.isclose(local[0][0][2], full.covariance.item(), rel_tol=1e-2)
    assert not math.isclose(local[1][0][1], full.variance.item(), rel_tol=1e-2)


def _fit_rank(rank, world, tmp):
    from selfsup.train.loop import fit

    from _util import tiny_dataset

    cfg = tiny_config("vicreg", batch=8, extra=["method.proj_hidden_dim=32", "method.proj_out_dim=16"])
    method = build_from_config(cfg)
    fit(method, tiny_dataset(cfg, 16), cfg.optim, cfg.train, tmp if rank == 0 else None)
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def test_vicreg_training_steps_under_ddp_equal_one_process(tmp_path):
    """Synchronized BN, gathered variance and covariance, per-rank invariance and DDP's averaging:
    two processes with half the batch each train to the weights of one process with all of it."""
    from selfsup.train.loop import fit

    from _util import tiny_dataset

    ranks = run_distributed(_fit_rank, 2, tmp_path / "two")
    cfg = tiny_config("vicreg", batch=8, extra=["method.proj_hidden_dim=32", "method.proj_out_dim=16"])
    method = build_from_config(cfg)
    fit(method, tiny_dataset(cfg, 16), cfg.optim, cfg.train, tmp_path / "one")
    for k, v in method.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            for r in ranks:
                torch.testing.assert_close(r[k], v, rtol=2e-4, atol=2e-5, msg=f"{k} differs")
