"""NT-Xent against a hand-computed case and an independent formula."""

from __future__ import annotations

import math

import torch

from selfsup.losses import nt_xent


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
