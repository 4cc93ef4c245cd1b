"""MMCR (losses/mmcr.py, methods/mmcr.py): the nuclear norms against independent formulas, the method's
views-per-image forward (with and without a momentum encoder), and the global centroid matrix over two
gloo processes."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.app.runs import build_from_config
from selfsup.config import load_config
from selfsup.losses import mmcr_loss
from selfsup.methods import Progress
from selfsup.nn.multicrop import multicrop_forward

from _dist import run_distributed
from _util import tiny_config, tiny_views


def nuclear_by_eigh(m: torch.Tensor) -> torch.Tensor:
    """``||M||_* = trace((M^T M)^(1/2))``: square roots of the eigenvalues of the Gram matrix (no SVD)."""
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    return torch.linalg.eigvalsh(gram.double()).clamp_min(0).sqrt().sum().to(m.dtype)


def loop_mmcr(z, target=None, lambd=0.0):
    """The official loss (mmcr/imagenet/loss_mmcr_momentum.py) image by image and view by view."""
    n, k, _ = z.shape
    rows, local = [], 0.0
    for i in range(n):
        views = [z[i, v] / z[i, v].norm() for v in range(k)]
        c = sum(views) / k
        if target is not None:
            c = 0.5 * (c + sum(target[i, v] / target[i, v].norm() for v in range(k)) / k)
        rows.append(c)
        local = local + nuclear_by_eigh(torch.stack(views))
    return lambd * local / n - nuclear_by_eigh(torch.stack(rows))


def test_mmcr_hand_computed_two_by_two():
    # image 0: views e1 and e2 (centroid (1/2, 1/2)); image 1: e1 twice (centroid (1, 0))
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [3.0, 0.0]]])  # lengths do not matter
    # for a 2x2 matrix ||C||_* = sqrt(||C||_F^2 + 2 |det C|) = sqrt(1.5 + 2 x 0.5)
    out = mmcr_loss(z)
    assert out.loss.item() == pytest.approx(-math.sqrt(2.5), abs=1e-6)
    assert out.global_nuc.item() == pytest.approx(math.sqrt(2.5), abs=1e-6)
    # local nuclear norms: image 0's [[1, 0], [0, 1]] has 2, image 1's [[1, 0], [1, 0]] has sqrt(2)
    out = mmcr_loss(z, lambd=0.5)
    assert out.local_nuc.item() == pytest.approx((2 + math.sqrt(2)) / 2, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.5 * (2 + math.sqrt(2)) / 2 - math.sqrt(2.5), abs=1e-6)


@pytest.mark.parametrize("with_target", [False, True])
@pytest.mark.parametrize("lambd", [0.0, 0.3])
def test_mmcr_matches_the_loop_and_its_gradient(with_target, lambd):
    torch.manual_seed(0)
    z = torch.randn(6, 3, 5, requires_grad=True)
    target = torch.randn(6, 3, 5) if with_target else None
    out = mmcr_loss(z, target, lambd)
    out.loss.backward()
    r = z.detach().clone().requires_grad_(True)
    ref = loop_mmcr(r, target, lambd)
    ref.backward()
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(z.grad, r.grad, rtol=1e-4, atol=1e-6)


def test_mmcr_rejects_flat_or_mismatched_inputs():
    with pytest.raises(ValueError, match=r"\(n, k, d\)"):
        mmcr_loss(torch.randn(6, 5))
    with pytest.raises(ValueError, match=r"\(n, k, d\)"):
        mmcr_loss(torch.randn(6, 2, 5), torch.randn(6, 3, 5))


def _views_per_image(out: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """``(k n, d)`` rows in view order -> ``(n, k, d)``, by explicit indexing."""
    return torch.stack([torch.stack([out[v * n + i] for v in range(k)]) for i in range(n)])


def test_mmcr_forward_without_momentum_encoder_is_the_cifar_official():
    cfg = tiny_config("mmcr", extra=["data.views.0.count=3"])
    assert cfg.method.momentum_encoder is False  # the official CIFAR setting
    method = build_from_config(cfg)
    assert method.ema_pairs() == []
    views = tiny_views(cfg)
    assert len(views) == 3
    out = method(views)
    with torch.no_grad():  # every view in one backbone pass, as the official (B N) batch
        z = method.projector(method.backbone(torch.cat(views)))
        ref = loop_mmcr(_views_per_image(z, views[0].shape[0], 3))
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert out.logs["global_nuc"].item() == pytest.approx(-ref.item(), rel=1e-5)
    assert "local_nuc" not in out.logs


def test_mmcr_forward_with_momentum_encoder_lambda_and_loss_scale():
    cfg = tiny_config(
        "mmcr",
        extra=["data.views.0.count=4", "method.momentum_encoder=true", "method.lambd=0.2", "method.loss_scale=0.5"],
    )
    method = build_from_config(cfg)
    with torch.no_grad():
        for p in [*method.target_backbone.parameters(), *method.target_projector.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    views = tiny_views(cfg)
    out = method(views)
    out.loss.backward()
    n = views[0].shape[0]
    with torch.no_grad():
        z = _views_per_image(method.projector(multicrop_forward(method.backbone, views)), n, 4)
        t = _views_per_image(method.target_projector(method.target_backbone(torch.cat(views))), n, 4)
        ref = loop_mmcr(z, t, 0.2)
    assert out.loss.item() == pytest.approx(0.5 * ref.item(), rel=1e-5)
    assert {"z_std", "global_nuc", "local_nuc"} == set(out.logs)
    assert all(p.grad is None for p in method.target_backbone.parameters())
    assert method.ema_momentum(Progress(0, 10, 1)) == 0.99  # constant, the official MomentumUpdate(tau)


def test_mmcr_needs_two_views():
    cfg = tiny_config("mmcr", extra=["data.views.0.count=2"])
    method = build_from_config(cfg)
    with pytest.raises(ValueError, match="at least 2 views"):
        method(tiny_views(cfg)[:1])


def test_imagenet_preset_scales_the_loss_to_the_official_16_gpu_gradient():
    cfg = load_config("mmcr-imagenet")
    assert cfg.method.loss_scale == pytest.approx(1 / 16) and cfg.method.momentum_encoder
    assert [v.count for v in cfg.data.views] == [1, 1] and cfg.train.batch_size == 2048


# ---------------------------------------------------------------------------------------------
# the centroid matrix over the global batch: two processes, each with half the images


def _mmcr_rank(rank, world, z, target, lambd):
    n = z.shape[0] // world
    # (k, n, d) seen as (n, k, d), as the method's views-per-image reshape: not contiguous
    base = z[rank * n : (rank + 1) * n].transpose(0, 1).contiguous().requires_grad_(True)
    mine = base.transpose(0, 1)
    t = None if target is None else target[rank * n : (rank + 1) * n].transpose(0, 1).contiguous().transpose(0, 1)
    out = mmcr_loss(mine, t, lambd, gather=True)
    out.loss.backward()
    return out.loss.item(), out.global_nuc.item(), base.grad.transpose(0, 1) / world


@pytest.mark.parametrize("with_target", [False, True])
def test_mmcr_global_nuclear_norm_over_two_ranks_equals_one_process(with_target):
    torch.manual_seed(3)
    z = torch.randn(8, 3, 6)
    target = torch.randn(8, 3, 6) if with_target else None
    lambd = 0.1
    full = z.clone().requires_grad_(True)
    out = mmcr_loss(full, target, lambd)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(loop_mmcr(z, target, lambd).item(), rel=1e-5)
    results = run_distributed(_mmcr_rank, 2, z, target, lambd)
    for r, (loss, nuc, grad) in enumerate(results):
        # every rank computes the global loss: the nuclear norm of all 8 centroids, not of its 4
        assert loss == pytest.approx(out.loss.item(), rel=1e-5)
        assert nuc == pytest.approx(out.global_nuc.item(), rel=1e-5)
        torch.testing.assert_close(grad, full.grad[r * 4 : (r + 1) * 4], rtol=1e-4, atol=1e-6)


def test_mmcr_loss_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(5)
    z = torch.randn(6, 3, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mmcr_loss(z.bfloat16(), lambd=0.1)
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(loop_mmcr(z.bfloat16().float(), None, 0.1).item(), rel=1e-5)
