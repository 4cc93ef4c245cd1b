"""The losses (selfsup.losses) against hand computations, explicit loops and, on two gloo ranks, one process."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import (
    barlow_twins_loss,
    cross_correlation,
    dino_loss,
    info_nce_batch,
    info_nce_queue,
    negative_cosine,
    normalized_mse,
    nt_xent,
    swav_loss,
)
from selfsup.nn.syncbn import convert_sync_batchnorm

from _dist import run_distributed
from _util import _loop_barlow, ref_info_nce_batch, ref_info_nce_queue, ref_ntxent_with_negatives


def reference_ntxent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """Eq. (1) of the SimCLR paper with explicit loops: -log(exp(s_ij/t) / sum_{k != i} exp(s_ik/t))."""
    z = torch.cat([z1, z2])
    z = z / z.norm(dim=1, keepdim=True)
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        num = torch.exp(z[i] @ z[j] / t)
        den = sum(torch.exp(z[i] @ z[k] / t) for k in range(n2) if k != i)
        total = total - torch.log(num / den)
    return total / n2


def test_ntxent_hand_computed_two_pairs():
    # two images, orthogonal 2-D embeddings; views of one image identical.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # norms do not matter
    t = 0.5
    # anchor 0: positive sim 1, negatives: z1[1] (0), z2[1] (0) -> -log(e^2 / (e^2 + 1 + 1))
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert abs(nt_xent(z1, z2, t).item() - expected) < 1e-6


def test_ntxent_matches_independent_formula_and_gradient():
    torch.manual_seed(0)
    for n, d, t in [(3, 4, 0.1), (8, 16, 0.5), (5, 3, 1.0)]:
        a, b = torch.randn(n, d, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64)
        a1, b1 = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        a2, b2 = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        ours, ref = nt_xent(a1.double(), b1.double(), t), reference_ntxent(a2, b2, t)
        # nt_xent computes in float32
        assert abs(ours.item() - ref.item()) < 1e-4 * max(1.0, ref.item())
        ours.backward()
        ref.backward()
        torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(b1.grad, b2.grad, rtol=1e-3, atol=1e-5)


def test_ntxent_is_symmetric_in_views_and_rejects_bad_shapes():
    torch.manual_seed(1)
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    assert torch.allclose(nt_xent(a, b, 0.2), nt_xent(b, a, 0.2))
    try:
        nt_xent(a, b[:5], 0.2)
    except ValueError as e:
        assert "shape" in str(e)
    else:
        raise AssertionError("mismatched shapes must raise")


# ---------------------------------------------------------------------------------------------
# InfoNCE against a queue and in-batch (losses/infonce.py), NT-Xent with memory negatives


def test_info_nce_queue_matches_loop_reference():
    torch.manual_seed(0)
    for n, d, size, t in [(4, 8, 10, 0.07), (6, 3, 5, 0.2), (1, 16, 32, 1.0)]:
        q, k, queue = torch.randn(n, d), torch.randn(n, d), torch.randn(size, d)
        assert abs(info_nce_queue(q, k, queue, t).item() - ref_info_nce_queue(q, k, queue, t)) < 1e-4


def test_info_nce_batch_matches_loop_reference():
    torch.manual_seed(1)
    for n, d, t in [(5, 8, 0.2), (8, 4, 1.0)]:
        q, k = torch.randn(n, d), torch.randn(n, d)
        assert abs(info_nce_batch(q, k, t).item() - ref_info_nce_batch(q, k, t)) < 1e-4


def test_ntxent_with_memory_negatives_matches_loop_reference():
    torch.manual_seed(2)
    z1, z2 = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6)
    neg = torch.randn(7, 6, requires_grad=True)
    loss = nt_xent(z1, z2, 0.1, negatives=neg)
    assert abs(loss.item() - ref_ntxent_with_negatives(z1.detach(), z2, neg.detach(), 0.1)) < 1e-4
    loss.backward()
    assert z1.grad is not None and neg.grad is None  # the memory receives no gradient


def test_mocov3_loss_gathered_over_two_ranks_equals_one_process(two_ranks):
    results, (_, q, k, w, t) = two_ranks
    weight = w.clone().requires_grad_(True)
    q1, q2 = q[0] @ weight, q[1] @ weight
    loss = (info_nce_batch(q1, k[1], t) + info_nce_batch(q2, k[0], t)) * 2 * t
    loss.backward()
    assert abs(sum(r["loss"] for r in results) / 2 - loss.item()) < 1e-5
    torch.testing.assert_close(sum(r["grad"] for r in results), weight.grad, rtol=1e-4, atol=1e-6)
    # and the reference is the loop formula, up to the 2T scale
    ref = (ref_info_nce_batch(q1.detach(), k[1], t) + ref_info_nce_batch(q2.detach(), k[0], t)) * 2 * t
    assert abs(loss.item() - ref) < 1e-4


# ---------------------------------------------------------------------------------------------
# negative cosine and normalized MSE (losses/cosine.py)


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


# ---------------------------------------------------------------------------------------------
# Barlow Twins (losses/barlow.py)


def test_barlow_twins_loss_matches_a_loop():
    torch.manual_seed(2)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    c = cross_correlation(a, b)
    c_ref, loss_ref = _loop_barlow(a, b, 0.3)
    torch.testing.assert_close(c, torch.tensor(c_ref), rtol=1e-5, atol=1e-6)
    assert barlow_twins_loss(c, 0.3).item() == pytest.approx(loss_ref, rel=1e-5)


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


# ---------------------------------------------------------------------------------------------
# SwAV and DINO (losses/swav.py, losses/dino.py)


def _softmax_row(x: list[float]) -> list[float]:
    m = max(x)
    e = [math.exp(v - m) for v in x]
    return [v / sum(e) for v in e]


def test_swav_loss_matches_explicit_loops():
    torch.manual_seed(0)
    v, b, k, t = 4, 3, 5, 0.1
    scores = [torch.randn(b, k) for _ in range(v)]
    codes = [F.softmax(torch.randn(b, k), dim=1) for _ in range(2)]
    expected = 0.0
    for i in range(2):
        sub = 0.0
        for view in range(v):
            if view == i:
                continue
            for n in range(b):
                p = _softmax_row([x / t for x in scores[view][n].tolist()])
                sub -= sum(q * math.log(pk) for q, pk in zip(codes[i][n].tolist(), p)) / b
        expected += sub / (v - 1)
    expected /= 2
    assert swav_loss(scores, codes, t).item() == pytest.approx(expected, rel=1e-5)


def test_dino_loss_matches_explicit_loops():
    torch.manual_seed(1)
    v, b, k, tt, ts = 5, 3, 6, 0.04, 0.1
    student = [torch.randn(b, k) for _ in range(v)]
    teacher = [torch.randn(b, k) for _ in range(2)]
    center = torch.randn(1, k)
    total, terms = 0.0, 0
    for i in range(2):
        for view in range(v):
            if view == i:
                continue
            for n in range(b):
                q = _softmax_row([(x - c) / tt for x, c in zip(teacher[i][n].tolist(), center[0].tolist())])
                p = _softmax_row([x / ts for x in student[view][n].tolist()])
                total -= sum(qk * math.log(pk) for qk, pk in zip(q, p)) / b
            terms += 1
    assert terms == 2 * v - 2
    assert dino_loss(student, teacher, center, tt, ts).item() == pytest.approx(total / terms, rel=1e-5)
