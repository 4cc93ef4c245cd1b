"""Cross-rank operations in two gloo processes equal one process holding the whole batch."""

from __future__ import annotations

import torch

from _dist import run_distributed
from selfsup import dist
from selfsup.losses import nt_xent


def _ntxent_rank(rank, world, z1, z2, t):
    n = z1.shape[0] // world
    a = z1[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    b = z2[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    loss = nt_xent(a, b, t, gather=True)
    loss.backward()
    # DDP averages parameter gradients over ranks, so the gradient reaching this rank's inputs,
    # divided by the world size, is what one process sees for these rows of the whole batch.
    return loss.item(), a.grad / world, b.grad / world


def test_gather_is_identity_on_one_process():
    x = torch.randn(3, 4, requires_grad=True)
    assert dist.gather(x) is x and dist.world_size() == 1 and dist.rank() == 0


def test_ntxent_with_gathered_negatives_matches_one_process():
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 5), torch.randn(8, 5)
    full1, full2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    loss = nt_xent(full1, full2, 0.3)
    loss.backward()
    results = run_distributed(_ntxent_rank, 2, z1, z2, 0.3)
    mean_loss = sum(r[0] for r in results) / 2
    assert abs(mean_loss - loss.item()) < 1e-5
    # rank r holds rows r*4..r*4+3; its (averaged) gradient slice equals the one-process gradient
    for r, (_, ga, gb) in enumerate(results):
        torch.testing.assert_close(ga, full1.grad[r * 4 : (r + 1) * 4], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(gb, full2.grad[r * 4 : (r + 1) * 4], rtol=1e-4, atol=1e-6)
