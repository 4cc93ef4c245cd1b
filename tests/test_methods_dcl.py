"""DCL and DCLW (losses/dcl.py, methods/dcl.py): the decoupled loss against a loop, its weighting, the
method's forward, and the gathered negatives on two gloo processes."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.app.runs import build_from_config
from selfsup.config import load_config
from selfsup.losses import dcl_loss, nt_xent, vmf_weights

from _dist import run_distributed
from _util import tiny_config, tiny_views


def loop_dcl(z1: torch.Tensor, z2: torch.Tensor, t: float, sigma: float | None = None) -> torch.Tensor:
    """Eq. (6) of arXiv:2110.06848 one anchor at a time, with torch scalars (so autograd gives its
    gradient); DCLW's weights ``2 - exp(s_i / sigma) / mean_j exp(s_j / sigma)`` are constants."""
    n = z1.shape[0]
    z = [z1[i] / z1[i].norm() for i in range(n)] + [z2[i] / z2[i].norm() for i in range(n)]
    pos = [z[i] @ z[i + n] for i in range(n)]
    w = [1.0] * n
    if sigma is not None:
        e = [math.exp(float(p.detach()) / sigma) for p in pos]
        w = [2 - ei / (sum(e) / n) for ei in e]
    total = z1.new_zeros(())
    for a in range(2 * n):
        i, p = a % n, (a + n) % (2 * n)
        neg = sum(torch.exp(z[a] @ z[b] / t) for b in range(2 * n) if b not in (a, p))
        total = total - w[i] * pos[i] / t + torch.log(neg)
    return total / (2 * n)


def test_dcl_hand_computed_on_orthogonal_pairs():
    # two images, each view of image i = e_i: the positive is 1, the two negatives of every anchor are 0
    z = torch.eye(2)
    assert dcl_loss(z, z.clone(), 0.5).item() == pytest.approx(-1 / 0.5 + math.log(2), abs=1e-6)
    # NT-Xent keeps the positive in the denominator: log(e^2 + 2) - 2
    assert nt_xent(z, z.clone(), 0.5).item() == pytest.approx(math.log(math.exp(2) + 2) - 2, abs=1e-6)
    # DCLW on equal positives: every weight is 2 - 1 = 1, so the same value
    assert dcl_loss(z, z.clone(), 0.5, sigma=0.5).item() == pytest.approx(-2 + math.log(2), abs=1e-6)


@pytest.mark.parametrize("sigma", [None, 0.5])
def test_dcl_and_dclw_match_the_loop_reference_and_its_gradient(sigma):
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    loss = dcl_loss(z1, z2, 0.3, sigma=sigma)
    loss.backward()
    r1, r2 = z1.detach().clone().requires_grad_(True), z2.detach().clone().requires_grad_(True)
    ref = loop_dcl(r1, r2, 0.3, sigma)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(z1.grad, r1.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(z2.grad, r2.grad, rtol=1e-4, atol=1e-6)


def test_dclw_weights_are_two_minus_n_softmax_average_one_and_carry_no_gradient():
    s = torch.tensor([0.9, 0.1, -0.4, 0.5], requires_grad=True)
    w = vmf_weights(s, 0.5)
    e = [math.exp(v / 0.5) for v in s.tolist()]
    assert w.tolist() == pytest.approx([2 - x / (sum(e) / 4) for x in e], rel=1e-6)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert not w.requires_grad
    # the easiest positive (largest similarity) gets the smallest weight
    assert int(w.argmin()) == 0


def test_dcl_rejects_mismatched_views():
    with pytest.raises(ValueError, match="one shape"):
        dcl_loss(torch.randn(4, 3), torch.randn(5, 3))


@pytest.mark.parametrize("name", ["dcl", "dclw"])
def test_method_loss_is_loss_a_plus_loss_b_of_the_projections(name):
    cfg = tiny_config(name, extra=["method.proj_out_dim=8"])
    method = build_from_config(cfg)
    views = tiny_views(cfg)
    out = method(views)
    n = views[0].shape[0]
    with torch.no_grad():
        z = method.projector(method.backbone(torch.cat(views)))  # one BN pass over both views, as the method
        ref = 2 * loop_dcl(z[:n], z[n:], method.cfg.temperature, 0.5 if name == "dclw" else None)
        cos = torch.nn.functional.cosine_similarity(z[:n], z[n:], dim=1).mean()
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert out.logs["pos_cos"].item() == pytest.approx(cos.item(), abs=1e-6)
    assert set(out.logs) == {"z_std", "pos_cos"}


def test_presets_keep_the_papers_sigma_and_temperature():
    assert load_config("dclw-imagenet").method.sigma == 0.5
    assert load_config("dclw-cifar10").method.sigma == 0.5
    assert load_config("dcl-imagenet").method.temperature == 0.1
    assert not hasattr(load_config("dcl-imagenet").method, "sigma")


# ---------------------------------------------------------------------------------------------
# two processes, each with half the batch, against one with all of it


def _dcl_rank(rank, world, z1, z2, t, sigma):
    n = z1.shape[0] // world
    a = z1[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    b = z2[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    loss = dcl_loss(a, b, t, sigma=sigma, gather=True)
    loss.backward()
    # DDP averages gradients over ranks: this rank's share of one process's gradient is grad / world
    return loss.item(), a.grad / world, b.grad / world


@pytest.mark.parametrize("sigma", [None, 0.5])
def test_dcl_with_gathered_negatives_over_two_ranks_equals_one_process(sigma):
    torch.manual_seed(1)
    z1, z2 = torch.randn(8, 5), torch.randn(8, 5)
    f1, f2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    full = dcl_loss(f1, f2, 0.2, sigma=sigma)
    full.backward()
    # and the one-process value is the loop's
    assert full.item() == pytest.approx(loop_dcl(z1, z2, 0.2, sigma).item(), rel=1e-5)

    results = run_distributed(_dcl_rank, 2, z1, z2, 0.2, sigma)
    assert sum(r[0] for r in results) / 2 == pytest.approx(full.item(), rel=1e-5)
    for r, (_, ga, gb) in enumerate(results):
        rows = slice(r * 4, (r + 1) * 4)
        torch.testing.assert_close(ga, f1.grad[rows], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(gb, f2.grad[rows], rtol=1e-4, atol=1e-6)


def test_dcl_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(6)
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = dcl_loss(z1.bfloat16(), z2.bfloat16(), 0.2, sigma=0.5)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(
        loop_dcl(z1.bfloat16().float(), z2.bfloat16().float(), 0.2, 0.5).item(), rel=1e-5
    )
