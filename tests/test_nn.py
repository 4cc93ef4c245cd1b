"""The building blocks in selfsup.nn: queue, EMA targets, split-batch BN and shuffling, Sinkhorn, multi-crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones import BACKBONES, build_backbone
from selfsup.methods import Progress
from selfsup.methods.dino import updated_center
from selfsup.methods.moco import MoCoConfig
from selfsup.methods.mocov3 import MoCoV3Config
from selfsup.methods.simclrv2 import SimCLRv2Config
from selfsup.nn import (
    FeatureQueue,
    SplitBatchNorm,
    batch_shuffle,
    batch_unshuffle,
    convert_split_bn,
    ema_update,
    multicrop_forward,
    sinkhorn,
)
from selfsup.nn.shuffle_bn import fitting_splits

from _dist import run_distributed
from _util import _tiny

# ---------------------------------------------------------------------------------------------
# the feature queue (nn/queue.py)


def test_queue_is_fifo_and_wraps_around():
    queue = FeatureQueue(5, 2)
    rows = torch.arange(20, dtype=torch.float32).view(10, 2)  # key i = rows[i]
    for b in range(3):  # keys 0..5 into slots 0,1 | 2,3 | 4,0
        queue.enqueue(rows[2 * b : 2 * b + 2])
    assert torch.equal(queue.queue, rows[[5, 1, 2, 3, 4]]) and queue.ptr.item() == 1
    snapshot = queue()
    queue.enqueue(rows[6:8])  # slots 1, 2
    assert torch.equal(queue.queue, rows[[5, 6, 7, 3, 4]]) and queue.ptr.item() == 3
    assert torch.equal(snapshot, rows[[5, 1, 2, 3, 4]])  # forward() returns a snapshot
    # more keys than rows: sequential writes from slot 3 leave keys 3..7 of this batch
    many = 100 + torch.arange(16, dtype=torch.float32).view(8, 2)
    queue.enqueue(many)  # slots 3,4,0,1,2,3,4,0
    assert torch.equal(queue.queue, many[[7, 3, 4, 5, 6]]) and queue.ptr.item() == 1


def test_queue_state_dict_resumes_the_same_queue():
    torch.manual_seed(0)
    a = FeatureQueue(6, 3)
    a.enqueue(torch.randn(4, 3))
    b = FeatureQueue(6, 3)
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) == {"queue", "ptr"}
    more = torch.randn(4, 3)
    a.enqueue(more)
    b.enqueue(more)
    assert torch.equal(a.queue, b.queue) and a.ptr.item() == b.ptr.item() == 2


def test_queue_on_two_ranks_equals_one_process_enqueuing_the_global_batches(two_ranks):
    results, (batches, *_rest) = two_ranks
    single = FeatureQueue(10, 3)
    single.queue.zero_()
    for b in batches:
        single.enqueue(b)
    for r in results:
        assert torch.equal(r["queue"], single.queue) and r["ptr"] == single.ptr.item() == 6


# ---------------------------------------------------------------------------------------------
# EMA targets (nn/ema.py)


def test_ema_update_of_key_encoder_matches_hand_computation():
    method = _tiny("mocov2", MoCoConfig(name="mocov2", queue_size=16, proj_layers=2, proj_hidden_dim=8))
    with torch.no_grad():
        for p in method.projector.parameters():
            p.add_(torch.randn_like(p))
    m = method.ema_momentum(Progress(0, 10, 5))
    assert m == 0.999
    expected = [m * t + (1 - m) * o for o, t in zip(method.projector.parameters(), method.key_projector.parameters())]
    for online, target in method.ema_pairs():
        ema_update(online, target, m)
    for e, t in zip(expected, method.key_projector.parameters()):
        torch.testing.assert_close(t, e)
    # hand-computed on one weight: target w_t, online w_o -> 0.999 w_t + 0.001 w_o
    lin = nn.Linear(1, 1, bias=False)
    tgt = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(2.0)
        tgt.weight.fill_(1.0)
    ema_update(lin, tgt, 0.999)
    assert abs(tgt.weight.item() - 1.001) < 1e-6


CONFIGS = {
    "mocov1": MoCoConfig(queue_size=32),
    "mocov2": MoCoConfig(name="mocov2", queue_size=32, proj_layers=2, proj_hidden_dim=16),
    "mocov3": MoCoV3Config(proj_hidden_dim=16, pred_hidden_dim=16, proj_out_dim=8),
    "simclrv2": SimCLRv2Config(queue_size=32, proj_hidden_dim=16),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_key_encoder_gets_no_gradient(name):
    method = _tiny(name, CONFIGS[name])
    x = torch.randn(8, 3, 16, 16)
    method([x, x.flip(-1)]).loss.backward()
    assert method.ema_pairs()
    for online, target in method.ema_pairs():
        assert any(p.grad is not None for p in online.parameters())
        assert all(not p.requires_grad and p.grad is None for p in target.parameters())
    groups = method.param_groups()
    trainable = {id(p) for g in groups for p in g["params"]}
    assert not trainable & {id(p) for _, t in method.ema_pairs() for p in t.parameters()}


# ---------------------------------------------------------------------------------------------
# split-batch BN (the one-process shuffle-BN) and the batch shuffle (nn/shuffle_bn.py)


def test_split_batchnorm_equals_bn_on_each_split():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4) + torch.arange(4).repeat_interleave(2).view(8, 1, 1, 1).float()  # split means differ
    bn = SplitBatchNorm(3, num_splits=4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        bn.running_mean.copy_(torch.tensor([0.5, 0.0, -0.5]))
    w = bn.weight.detach().clone().requires_grad_(True)
    start_mean, start_var = bn.running_mean.clone(), bn.running_var.clone()
    out = bn(x)
    parts, means, vars_ = [], [], []
    for s in range(4):
        rm, rv = start_mean.clone(), start_var.clone()
        parts.append(F.batch_norm(x[2 * s : 2 * s + 2], rm, rv, w, bn.bias.detach(), True, 0.1, bn.eps))
        means.append(rm)
        vars_.append(rv)
    torch.testing.assert_close(out, torch.cat(parts))
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack(vars_).mean(0))
    # statistics really are per split: whole-batch BN normalizes differently
    assert not torch.allclose(out, F.batch_norm(x, None, None, w, bn.bias, True, 0.1, bn.eps), atol=1e-2)
    # gradients to the shared affine parameters sum over splits
    out.square().sum().backward()
    torch.cat(parts).square().sum().backward()
    torch.testing.assert_close(bn.weight.grad, w.grad)
    bn.eval()  # evaluation is plain BN with the running statistics
    torch.testing.assert_close(bn(x), F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False))
    # a channels_last batch stays channels_last (no layout flip before the next convolution), same values
    bn.train()
    nhwc = bn(x.contiguous(memory_format=torch.channels_last))
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nhwc, torch.cat(parts).detach())


def test_convert_split_bn_keeps_weights_and_keys():
    torch.manual_seed(0)
    plain = build_backbone("resnet10")
    keys = {k: v.clone() for k, v in plain.state_dict().items()}
    converted = convert_split_bn(plain, 2)
    assert isinstance(converted.bn1, SplitBatchNorm) and isinstance(converted.layer1[0].bn2, SplitBatchNorm)
    state = converted.state_dict()
    assert state.keys() == keys.keys() and all(torch.equal(state[k], keys[k]) for k in keys)
    assert [fitting_splits(n, 8) for n in (256, 8, 12, 7, 2)] == [8, 4, 6, 1, 1]


def test_batch_shuffle_roundtrip_on_one_process():
    x = torch.arange(12.0).view(6, 2)
    shuffled, undo = batch_shuffle(x, torch.Generator().manual_seed(0))
    assert not torch.equal(shuffled, x) and torch.equal(shuffled.sort(0).values, x)
    assert torch.equal(batch_unshuffle(shuffled * 3, undo), x * 3)


def test_shuffle_across_ranks_unshuffles_to_the_original_order(two_ranks):
    results, _ = two_ranks
    everything = torch.cat([r["shuffled"] for r in results])
    assert torch.equal(everything.sort(0).values, torch.arange(16.0).view(8, 2))  # a permutation
    # rows do cross ranks (this seed's permutation), and come back in place
    assert not torch.equal(results[0]["shuffled"].sort(0).values, torch.arange(8.0).view(4, 2))
    for r in results:
        assert torch.equal(r["restored"], r["local"])


# ---------------------------------------------------------------------------------------------
# Sinkhorn-Knopp (nn/sinkhorn.py)


def _cosines(b: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, 6, generator=g), dim=1) @ F.normalize(torch.randn(k, 6, generator=g), dim=1).T


def _sinkhorn_reference(scores: np.ndarray, eps: float, iters: int) -> np.ndarray:
    """The official algorithm (main_swav.py) in float64 with explicit loops, no shift."""
    q = np.exp(scores.T.astype(np.float64) / eps)  # K x B
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        for i in range(k):
            q[i] /= q[i].sum() * k
        for j in range(b):
            q[:, j] /= q[:, j].sum() * b
    return (q * b).T


def test_sinkhorn_matches_reference_and_marginals():
    s = _cosines(24, 6, 0)
    codes = sinkhorn(s, epsilon=0.05, iterations=3)
    np.testing.assert_allclose(codes.numpy(), _sinkhorn_reference(s.numpy(), 0.05, 3), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(24))  # one distribution per sample
    converged = sinkhorn(s, epsilon=0.05, iterations=300)
    torch.testing.assert_close(converged.sum(dim=1), torch.ones(24))
    torch.testing.assert_close(converged.sum(dim=0), torch.full((6,), 24 / 6), rtol=1e-3, atol=1e-3)
    # the equipartition matters: plain softmax codes are far from it
    assert (F.softmax(s / 0.05, dim=1).sum(dim=0) - 4).abs().max() > 0.5


def test_sinkhorn_is_stable_for_large_scores():
    s = _cosines(16, 5, 1)
    assert not torch.isfinite(torch.exp(s / 0.01)).all()  # overflows float32 without the shift
    codes = sinkhorn(s, epsilon=0.01, iterations=3)
    assert torch.isfinite(codes).all()
    np.testing.assert_allclose(codes.numpy(), _sinkhorn_reference(s.numpy(), 0.01, 3), rtol=1e-4, atol=1e-6)


def _two_rank_reductions(rank, world, scores, teacher, center):
    n = scores.shape[0] // world
    codes = sinkhorn(scores[rank * n : (rank + 1) * n], 0.05, 3)
    m = teacher.shape[0] // world
    new_center = updated_center(center, teacher[rank * m : (rank + 1) * m], 0.9)
    return codes, new_center


def test_sinkhorn_and_center_on_two_processes_equal_one_process():
    scores = _cosines(16, 5, 2)
    teacher = torch.randn(12, 7)
    center = torch.randn(1, 7)
    res = run_distributed(_two_rank_reductions, 2, scores, teacher, center)
    torch.testing.assert_close(torch.cat([r[0] for r in res]), sinkhorn(scores, 0.05, 3), rtol=1e-5, atol=1e-6)
    for _, c in res:
        torch.testing.assert_close(c, updated_center(center, teacher, 0.9), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# the multi-crop forward (nn/multicrop.py)


class _Counting(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def _check_multicrop(backbone, sizes, expected_calls):
    torch.manual_seed(0)
    backbone.eval()
    views = [torch.randn(3, 3, s, s) for s in sizes]
    counting = _Counting(backbone)
    with torch.no_grad():
        out = multicrop_forward(counting, views)
        ref = torch.cat([backbone(v) for v in views])
    assert counting.calls == expected_calls
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_multicrop_one_pass_per_resolution_in_input_order_resnet():
    backbone = build_backbone("resnet10")
    _check_multicrop(backbone, [32, 32, 16, 16, 16], 2)
    _check_multicrop(backbone, [32, 16, 32], 3)  # only consecutive views are grouped


def test_multicrop_one_pass_per_resolution_in_input_order_vit():
    if "vit_small_patch16" not in BACKBONES:
        pytest.skip("ViT backbones are not registered")
    vit = build_backbone("vit_small_patch16", img_size=32, embed_dim=48, depth=1)
    _check_multicrop(vit, [32, 32, 16, 16, 16], 2)  # 16 px: the position embedding resampled to 1 x 1
