"""NNCLR (methods/nnclr.py): the nearest-neighbour lookup against a brute-force search, the loss (the
paper's eq. 1, symmetrized) against loops, the support set updated after the loss, and the gathered
negatives and support set on two processes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.app.runs import build_from_config
from selfsup.losses import info_nce_batch
from selfsup.methods.nnclr import nearest_neighbours
from selfsup.nn import FeatureQueue

from _dist import run_distributed
from _util import tiny_config, tiny_views

SMALL = ["method.proj_hidden_dim=32", "method.proj_out_dim=8", "method.pred_hidden_dim=16", "method.queue_size=32"]


def _dot(u, v) -> float:
    return sum(float(a) * float(b) for a, b in zip(u, v))


def _cos(u, v) -> float:
    return _dot(u, v) / math.sqrt(_dot(u, u) * _dot(v, v))


def brute_force_nn(z, support) -> list[int]:
    """Index of the support row with the largest cosine similarity to each row of z, one pair at a time."""
    out = []
    for i in range(z.shape[0]):
        sims = [_cos(z[i], support[j]) for j in range(support.shape[0])]
        out.append(max(range(len(sims)), key=sims.__getitem__))
    return out


def loop_nnclr_term(nn, p, t, anchors=None) -> float:
    """Eq. (1): -log exp(NN_i . p_i / t) / sum_k exp(NN_i . p_k / t), cosines, k over all rows of p,
    averaged over the anchors i (all rows by default)."""
    anchors = range(nn.shape[0]) if anchors is None else anchors
    total = 0.0
    for i in anchors:
        logits = [_cos(nn[i], p[k]) / t for k in range(p.shape[0])]
        top = max(logits)
        total -= logits[i] - top - math.log(sum(math.exp(x - top) for x in logits))
    return total / len(anchors)


def test_nearest_neighbours_match_a_brute_force_search():
    torch.manual_seed(0)
    for n, k, d in [(5, 7, 3), (16, 40, 8), (3, 1, 4)]:
        z = torch.randn(n, d) * torch.rand(n, 1) * 5  # row norms must not matter
        support = F.normalize(torch.randn(k, d), dim=1)
        got = nearest_neighbours(z, support)
        want = support[brute_force_nn(z, support)]
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_nearest_neighbour_of_a_stored_direction_is_that_row():
    # hand-computed: each query points along one stored direction (of any length)
    support = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.1]]), dim=1)
    z = torch.tensor([[3.0, 4.0], [-2.0, 0.0], [0.1, -0.01]])
    torch.testing.assert_close(nearest_neighbours(z, support), support[[1, 2, 0]])


def test_nnclr_loss_term_matches_the_loop():
    torch.manual_seed(1)
    for n, d, t in [(4, 3, 0.1), (7, 5, 0.2), (6, 8, 1.0)]:
        nn_ = F.normalize(torch.randn(n, d, dtype=torch.float64), dim=1)
        p = torch.randn(n, d, dtype=torch.float64)
        assert info_nce_batch(nn_, p, t).item() == pytest.approx(loop_nnclr_term(nn_, p, t), rel=1e-5)


def test_nnclr_forward_matches_the_reference_and_enqueues_after_the_loss():
    cfg = tiny_config("nnclr", extra=SMALL)
    method = build_from_config(cfg)
    assert method.queue.size == 32 and method.queue.queue.shape[1] == 8
    views = tiny_views(cfg)
    with torch.no_grad():  # BN in training mode: the same batch statistics as in the forward
        z = [method.projector(method.backbone(v)) for v in views]
        p = [method.predictor(zi) for zi in z]
    before = method.queue().clone()
    out = method(views)
    nn1 = before[brute_force_nn(z[0], before)]
    nn2 = before[brute_force_nn(z[1], before)]
    t = method.cfg.temperature
    ref = (loop_nnclr_term(nn1, p[1], t) + loop_nnclr_term(nn2, p[0], t)) / 2
    assert out.loss.item() == pytest.approx(ref, rel=1e-4)
    # after the loss: the normalized first-view projections fill the next 8 slots, the rest untouched
    torch.testing.assert_close(method.queue.queue[:8], F.normalize(z[0], dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(method.queue.queue[8:], before[8:], rtol=0, atol=0)
    assert method.queue.ptr.item() == 8
    # had the batch entered first, every first-view projection would find itself (cosine 1)
    assert out.logs["nn_cos"].item() < 0.99
    # a second step finds its first views in the support set: the same images, the same augmentations
    assert method(views).logs["nn_cos"].item() == pytest.approx(1.0, abs=1e-4)


def test_nnclr_gradient_reaches_the_projector_through_the_predictor_only():
    cfg = tiny_config("nnclr", extra=SMALL)
    method = build_from_config(cfg)
    out = method(tiny_views(cfg))
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.predictor.parameters())
    assert method.projector[0].weight.grad.abs().sum() > 0
    assert not method.queue.queue.requires_grad


# ---------------------------------------------------------------------------------------------
# two processes, each holding half of the batch


def _nnclr_rank(rank, world, z1, z2, p1, p2, t):
    n = z1.shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    torch.manual_seed(0)  # the same random initial support set on both ranks
    queue = FeatureQueue(12, z1.shape[1])
    support = queue()
    a, b = p1[rows].clone().requires_grad_(True), p2[rows].clone().requires_grad_(True)
    nn1, nn2 = nearest_neighbours(z1[rows], support), nearest_neighbours(z2[rows], support)
    loss = (info_nce_batch(nn1, b, t) + info_nce_batch(nn2, a, t)) / 2
    loss.backward()
    queue.enqueue(F.normalize(z1[rows], dim=1))
    # the updated support set, and the neighbours every rank finds in it for the same queries
    return loss.item(), a.grad / world, b.grad / world, queue.queue.clone(), nearest_neighbours(z2, queue())


def test_nnclr_gathered_negatives_and_support_set_on_two_ranks_match_one_process():
    torch.manual_seed(4)
    z1, z2, p1, p2 = (torch.randn(8, 5) for _ in range(4))
    t = 0.2
    torch.manual_seed(0)
    queue = FeatureQueue(12, 5)
    support = queue()
    a, b = p1.clone().requires_grad_(True), p2.clone().requires_grad_(True)
    nn1, nn2 = nearest_neighbours(z1, support), nearest_neighbours(z2, support)
    full = (info_nce_batch(nn1, b, t) + info_nce_batch(nn2, a, t)) / 2
    full.backward()
    queue.enqueue(F.normalize(z1, dim=1))
    # the loop reference of the one-process loss: 8 anchors, each against all 8 predictions
    assert full.item() == pytest.approx((loop_nnclr_term(nn1, p2, t) + loop_nnclr_term(nn2, p1, t)) / 2, rel=1e-5)

    ranks = run_distributed(_nnclr_rank, 2, z1, z2, p1, p2, t)
    # each rank's loss is the mean over its 4 anchors against all 8 predictions; DDP averages them
    assert sum(r[0] for r in ranks) / 2 == pytest.approx(full.item(), rel=1e-5)
    for r, (_, ga, gb, q, found) in enumerate(ranks):
        rows = slice(r * 4, (r + 1) * 4)
        torch.testing.assert_close(ga, a.grad[rows], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(gb, b.grad[rows], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(q, queue.queue, rtol=0, atol=0)  # all 8 rows, in rank order, on both
        torch.testing.assert_close(found, nearest_neighbours(z2, queue()), rtol=0, atol=0)
    # each rank's anchors against all 8 predictions (the gathered negatives), not its own 4 only
    for r, res in enumerate(ranks):
        mine = range(r * 4, (r + 1) * 4)
        gathered = (loop_nnclr_term(nn1, p2, t, mine) + loop_nnclr_term(nn2, p1, t, mine)) / 2
        assert res[0] == pytest.approx(gathered, rel=1e-5)
        alone = (loop_nnclr_term(nn1[mine], p2[mine], t) + loop_nnclr_term(nn2[mine], p1[mine], t)) / 2
        assert not math.isclose(res[0], alone, rel_tol=1e-3)


def _fit_rank(rank, world, tmp):
    from selfsup.train.loop import fit

    from _util import tiny_dataset

    cfg = tiny_config("nnclr", batch=8, extra=SMALL)
    method = build_from_config(cfg)
    fit(method, tiny_dataset(cfg, 16), cfg.optim, cfg.train, tmp if rank == 0 else None, max_steps=1)
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def test_nnclr_training_step_under_ddp_equals_one_process(tmp_path):
    """Synchronized BN, gathered negatives and the gathered enqueue in the loop: two processes with half
    the batch each end the step with the weights and support set of one process with all of it.

    One step only: on this 16-px, batch-8 network NNCLR's later steps are ill-conditioned (from the same
    weights after step 1, one and two CPU threads give gradients 1e-3 apart), so they differ by float
    noise alone; the cross-rank parts of every step are pinned exactly by the test above."""
    from selfsup.train.loop import fit

    from _util import tiny_dataset

    ranks = run_distributed(_fit_rank, 2, tmp_path / "two")
    cfg = tiny_config("nnclr", batch=8, extra=SMALL)
    method = build_from_config(cfg)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    fit(method, tiny_dataset(cfg, 16), cfg.optim, cfg.train, tmp_path / "one", max_steps=1)
    state = method.state_dict()
    assert state["queue.ptr"].item() == 8  # the step's 8 first-view projections (4 per rank)
    assert not torch.allclose(state["projector.0.weight"], before["projector.0.weight"], atol=1e-4)  # it trained
    for k, v in state.items():
        if not k.endswith("num_batches_tracked"):
            for r in ranks:
                torch.testing.assert_close(r[k], v, rtol=2e-4, atol=2e-5, msg=f"{k} differs")
