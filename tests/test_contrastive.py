"""The contrastive family (SimCLR v2, MoCo v1/v2/v3): losses against loop references, the queue,
EMA, shuffle-BN, the SK ResNets, and cross-rank behaviour on two gloo processes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.backbones.sk_resnet import SKConv, _shortcut
from selfsup.losses import info_nce_batch, info_nce_queue, nt_xent
from selfsup.methods import Progress, build_method
from selfsup.methods.moco import MoCoConfig
from selfsup.methods.mocov3 import MoCoV3Config
from selfsup.methods.simclrv2 import SimCLRv2Config
from selfsup.nn import FeatureQueue, SplitBatchNorm, batch_shuffle, batch_unshuffle, convert_split_bn, ema_update
from selfsup.nn.shuffle_bn import fitting_splits, set_bn_splits

from _dist import run_distributed

# ---------------------------------------------------------------------------------------------
# losses against explicit loops over anchors


def _unit(x):
    return x / x.norm(dim=1, keepdim=True)


def ref_info_nce_queue(q, k, queue, t):
    q, k, queue = _unit(q), _unit(k), _unit(queue)
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ queue[j]) / t) for j in range(queue.shape[0]))
        total -= math.log(pos / (pos + neg))
    return total / q.shape[0]


def ref_info_nce_batch(q, k, t):
    q, k = _unit(q), _unit(k)
    total = 0.0
    for i in range(q.shape[0]):
        den = sum(math.exp(float(q[i] @ k[j]) / t) for j in range(k.shape[0]))
        total -= math.log(math.exp(float(q[i] @ k[i]) / t) / den)
    return total / q.shape[0]


def ref_ntxent_with_negatives(z1, z2, neg, t):
    z, neg = _unit(torch.cat([z1, z2])), _unit(neg)
    n2 = z.shape[0]
    total = 0.0
    for i in range(n2):
        pos = math.exp(float(z[i] @ z[(i + n2 // 2) % n2]) / t)
        den = sum(math.exp(float(z[i] @ z[j]) / t) for j in range(n2) if j != i)
        den += sum(math.exp(float(z[i] @ neg[j]) / t) for j in range(neg.shape[0]))
        total -= math.log(pos / den)
    return total / n2


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


# ---------------------------------------------------------------------------------------------
# the feature queue


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


# ---------------------------------------------------------------------------------------------
# EMA and momentum schedules


def _tiny(name, cfg, backbone="resnet10"):
    torch.manual_seed(0)
    return build_method(name, build_backbone(backbone), cfg)


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


def test_mocov3_momentum_rises_from_099_to_1_by_cosine():
    method = _tiny("mocov3", MoCoV3Config(proj_hidden_dim=16, pred_hidden_dim=16, proj_out_dim=8))
    assert method.ema_momentum(Progress(0, 100, 10)) == pytest.approx(0.99)
    assert method.ema_momentum(Progress(50, 100, 10)) == pytest.approx(0.995)
    assert method.ema_momentum(Progress(100, 100, 10)) == pytest.approx(1.0)
    # official adjust_moco_momentum: 1 - 0.5 * (1 + cos(pi * t)) * (1 - m0)
    assert method.ema_momentum(Progress(30, 100, 10)) == pytest.approx(1 - 0.5 * (1 + math.cos(0.3 * math.pi)) * 0.01)


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
# methods: what enters the queue, and the loss they report


def test_moco_loss_and_enqueued_keys_match_a_direct_computation():
    method = _tiny("mocov1", MoCoConfig(queue_size=32, shuffle_bn=False))
    torch.manual_seed(3)
    x1, x2 = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    before = method.queue().clone()
    with torch.no_grad():
        q = method.projector(method.backbone(x1))
        k = method.key_projector(method.key_backbone(x2))
    loss = method([x1, x2]).loss
    assert abs(loss.item() - ref_info_nce_queue(q, k, before, 0.07)) < 1e-4
    torch.testing.assert_close(method.queue.queue[:8], F.normalize(k, dim=1))
    torch.testing.assert_close(method.queue.queue[8:], before[8:])


def test_moco_shuffle_returns_keys_to_their_images():
    """With one BN split the key batch's statistics ignore order, so shuffled keys equal unshuffled ones;
    with several splits they differ (the statistics are per split)."""
    x = torch.randn(8, 3, 16, 16)
    plain = _tiny("mocov1", MoCoConfig(queue_size=32, shuffle_bn=False))
    one_split = _tiny("mocov1", MoCoConfig(queue_size=32, bn_splits=1))
    four = _tiny("mocov1", MoCoConfig(queue_size=32, bn_splits=4))
    seen = []
    for bn in (four.backbone.bn1, four.key_backbone.bn1):
        bn.register_forward_pre_hook(lambda m, _: seen.append(m.num_splits))
    four([x, x])
    assert seen == [4, 4]  # query and key encoders normalize per split during the step
    assert all(m.num_splits == 1 for m in four.modules() if isinstance(m, SplitBatchNorm))  # plain BN between steps
    set_bn_splits(four, 4)
    reference = plain.keys(x)
    torch.testing.assert_close(one_split.keys(x), reference, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(four.keys(x), reference, atol=1e-3)


def test_simclrv2_memory_holds_momentum_embeddings_of_both_views():
    method = _tiny("simclrv2", SimCLRv2Config(queue_size=32, proj_hidden_dim=16))
    x1, x2 = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    before = method.queue().clone()
    with torch.no_grad():
        z = method.projector(method.backbone(torch.cat([x1, x2])))
        keys = method.memory_projector(method.memory_backbone(torch.cat([x1, x2])))
    loss = method([x1, x2]).loss
    # the official scale: loss_a + loss_b, twice the mean over the 2N anchors
    assert abs(loss.item() - 2 * ref_ntxent_with_negatives(z[:4], z[4:], before, 0.1)) < 2e-4
    torch.testing.assert_close(method.queue.queue[:8], F.normalize(keys, dim=1))


def test_simclrv2_finetunes_from_the_first_head_layer():
    method = _tiny("simclrv2", SimCLRv2Config(queue_size=0, proj_hidden_dim=16)).eval()
    assert len([m for m in method.projector if isinstance(m, nn.Linear)]) == 3 and method.ema_pairs() == []
    head = method.head_layers(method.cfg.finetune_layer)
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] and head[0].out_features == 16
    enc = nn.Sequential(method.backbone, head)
    x = torch.randn(2, 3, 16, 16)
    lin, bn = method.projector[0], method.projector[1]
    with torch.no_grad():
        h = method.backbone(x) @ lin.weight.T
        expected = F.relu((h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias)
        torch.testing.assert_close(enc(x), expected)


# ---------------------------------------------------------------------------------------------
# split-batch BN (the one-process shuffle-BN)


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


# ---------------------------------------------------------------------------------------------
# two gloo processes against one


def _contrastive_rank(rank, world, batches, q, k, w, t):
    from selfsup.nn import FeatureQueue, batch_shuffle, batch_unshuffle

    out = {}
    # 1. shuffle across ranks: each rank holds half the rows, gets rows of the global batch, and
    #    the unshuffle puts the encoder's output back in this rank's order
    n = 4
    x = torch.arange(16.0).view(8, 2)[rank * n : (rank + 1) * n]
    shuffled, undo = batch_shuffle(x, torch.Generator().manual_seed(1))
    out["shuffled"] = shuffled
    out["restored"] = batch_unshuffle(shuffled * 10 + 1, undo)
    out["local"] = x * 10 + 1
    # 2. the queue: every step enqueues this rank's keys
    queue = FeatureQueue(10, 3)
    queue.queue.zero_()
    for b in batches:
        queue.enqueue(b[rank * 2 : (rank + 1) * 2])
    out["queue"], out["ptr"] = queue.queue.clone(), queue.ptr.item()
    # 3. MoCo v3's symmetric loss with keys gathered from both ranks; DDP averages the gradient
    sl = slice(rank * n, (rank + 1) * n)
    weight = w.clone().requires_grad_(True)
    q1, q2 = q[0][sl] @ weight, q[1][sl] @ weight
    loss = (info_nce_batch(q1, k[1][sl], t) + info_nce_batch(q2, k[0][sl], t)) * 2 * t
    loss.backward()
    out["loss"], out["grad"] = loss.item(), weight.grad / world
    return out


@pytest.fixture(scope="module")
def two_ranks():
    torch.manual_seed(0)
    batches = [torch.randn(4, 3) for _ in range(4)]  # global batch 4 (2 per rank), 4 steps: wraps at 10
    q = (torch.randn(8, 5), torch.randn(8, 5))
    k = (torch.randn(8, 6), torch.randn(8, 6))
    w = torch.randn(5, 6)
    t = 0.2
    return run_distributed(_contrastive_rank, 2, batches, q, k, w, t), (batches, q, k, w, t)


def test_shuffle_across_ranks_unshuffles_to_the_original_order(two_ranks):
    results, _ = two_ranks
    everything = torch.cat([r["shuffled"] for r in results])
    assert torch.equal(everything.sort(0).values, torch.arange(16.0).view(8, 2))  # a permutation
    # rows do cross ranks (this seed's permutation), and come back in place
    assert not torch.equal(results[0]["shuffled"].sort(0).values, torch.arange(8.0).view(4, 2))
    for r in results:
        assert torch.equal(r["restored"], r["local"])


def test_queue_on_two_ranks_equals_one_process_enqueuing_the_global_batches(two_ranks):
    results, (batches, *_rest) = two_ranks
    single = FeatureQueue(10, 3)
    single.queue.zero_()
    for b in batches:
        single.enqueue(b)
    for r in results:
        assert torch.equal(r["queue"], single.queue) and r["ptr"] == single.ptr.item() == 6


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
# SimCLR v2's wide and selective-kernel ResNets


@pytest.mark.parametrize("name, millions", [("r50-1x", 24), ("r50-1x-sk", 35), ("r50-2x", 94), ("r50-2x-sk", 140)])
def test_sk_resnet_parameter_counts_match_the_paper(name, millions):
    with torch.device("meta"):  # SimCLR v2 Table 1 (ResNet-50 rows), without building real weights
        model = build_backbone(name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == millions
    assert model.num_features == 2048 * int(name[4])


def test_r50_1x_is_torchvision_resnet50():
    torch.manual_seed(0)
    ours = build_backbone("r50-1x").eval()
    plain = torchvision.models.resnet50()
    plain.fc = nn.Identity()
    plain.load_state_dict(ours.state_dict())  # same keys and shapes
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), ours(x))


def test_sk_conv_matches_an_independent_computation():
    torch.manual_seed(0)
    sk = SKConv(4, stride=2, min_dim=3).eval()
    for bn in (sk.bn, sk.fc_bn):
        with torch.no_grad():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 4, 6, 6)

    def bn_eval(y, bn):
        return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)

    with torch.no_grad():
        full = F.relu(bn_eval(F.conv2d(x, sk.conv.weight, stride=2, padding=1), sk.bn))
        a, b = full[:, :4], full[:, 4:]  # the two 3x3 streams
        s = (a + b).mean((2, 3), keepdim=True)
        z = F.relu(bn_eval(F.conv2d(s, sk.fc1.weight), sk.fc_bn))
        logits = F.conv2d(z, sk.fc2.weight)
        wa = torch.exp(logits[:, :4]) / (torch.exp(logits[:, :4]) + torch.exp(logits[:, 4:]))
        expected = wa * a + (1 - wa) * b
        torch.testing.assert_close(sk(x), expected)


def test_resnet_d_shortcut_pools_as_tensorflow():
    """Stride 1: 2x2 'SAME' average that ignores the padded border; stride 2: zero-padded 'VALID'."""
    x = torch.randn(1, 1, 5, 5)
    for stride in (1, 2):
        block = _shortcut(1, 1, stride, resnet_d=True)
        pooled = block[0](x)
        out = (5 + 1) // 2 if stride == 2 else 5
        expected = torch.zeros(1, 1, out, out)
        for i in range(out):
            for j in range(out):
                r, c = i * stride, j * stride
                cells = [(r + a, c + b) for a in (0, 1) for b in (0, 1)]
                if stride == 1:  # average over the cells inside the image
                    vals = [x[0, 0, p, q] for p, q in cells if p < 5 and q < 5]
                    expected[0, 0, i, j] = sum(vals) / len(vals)
                else:  # zero padding counted
                    expected[0, 0, i, j] = sum(x[0, 0, p, q] for p, q in cells if p < 5 and q < 5) / 4
        torch.testing.assert_close(pooled, expected)


# ---------------------------------------------------------------------------------------------
# whole training steps in the loop under DDP


SMALL_HEADS = {
    "mocov2": ["method.queue_size=64"],
    "mocov3": ["method.proj_hidden_dim=64", "method.pred_hidden_dim=64"],
    "simclrv2": ["method.queue_size=64"],
}


def _fit_ranks(rank, world, tmp):
    from selfsup.app.runs import build_from_config
    from selfsup.train.loop import fit

    from _util import tiny_config, tiny_dataset

    states = {}
    for name, extra in SMALL_HEADS.items():
        cfg = tiny_config(name, batch=8, extra=["train.epochs=1", *extra])
        method = build_from_config(cfg)
        fit(method, tiny_dataset(cfg, 16), cfg.optim, cfg.train, tmp / name if rank == 0 else None)
        states[name] = {k: v.detach().clone() for k, v in method.state_dict().items()}
    return states


def test_training_steps_under_ddp(tmp_path):
    """MoCo v3 and SimCLR v2 (global BN, gathered keys, memory filled from all ranks) on two processes
    equal one process with the same global batch; MoCo v2 (shuffle-BN across ranks, by design not
    equal to one process) keeps one queue and one set of weights on both ranks."""
    from selfsup.app.runs import build_from_config
    from selfsup.train.loop import fit

    from _util import tiny_config, tiny_dataset

    ranks = run_distributed(_fit_ranks, 2, tmp_path / "two")
    for name in ("mocov3", "simclrv2"):
        cfg = tiny_config(name, batch=8, extra=["train.epochs=1", *SMALL_HEADS[name]])
        method = build_from_config(cfg)
        fit(method, tiny_dataset(cfg, 16), cfg.optim, cfg.train, tmp_path / "one" / name)
        for k, v in method.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                for r in ranks:
                    torch.testing.assert_close(r[name][k], v, rtol=2e-4, atol=2e-5, msg=f"{name}: {k} differs")
    a, b = ranks[0]["mocov2"], ranks[1]["mocov2"]
    for k in a:  # BN running statistics are per rank with shuffle-BN
        if "running_" not in k and "num_batches" not in k:
            torch.testing.assert_close(a[k], b[k], msg=f"mocov2: {k} differs between ranks")
    assert a["queue.ptr"].item() == 2 * 8  # two steps of 8 keys (4 per rank) were enqueued
