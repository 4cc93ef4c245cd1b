"""DINOv2 (methods/dinov2.py): the loss equal to the official meta-architecture's on both centerings,
KoLeo against a loop and across two processes, layer-wise decay groups, per-module clipping, the
temperature schedule, and two processes against one."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfsup.backbones import build_backbone
from selfsup.backbones.vit import forward_mask_token
from selfsup.losses import koleo_loss
from selfsup.methods import Progress, build_method
from selfsup.methods.dinov2 import DINOv2Config, warmup_temperature
from selfsup.nn.masking import BlockMasking, batch_block_masks
from selfsup.train.optim import clip_grad

from _dist import run_distributed


def _method(**kw):
    torch.manual_seed(0)
    backbone = build_backbone("vit_tiny_patch4", img_size=16, depth=2, layer_scale=1e-5, reg_tokens=kw.pop("reg", 0))
    cfg = DINOv2Config(out_dim=48, ibot_out_dim=40, hidden_dim=32, bottleneck_dim=16, **kw)
    return build_method("dinov2", backbone, cfg)


def _views(n: int = 6, seed: int = 0, local: int = 3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 16, 16, generator=g) for _ in range(2 + local)][:2] + [
        torch.randn(n, 3, 8, 8, generator=g) for _ in range(local)
    ]


def serve(masks):
    turn = itertools.cycle([masks])
    return lambda batch, grid, device: next(turn)


def _masks(n: int, seed: int = 3) -> torch.Tensor:
    return batch_block_masks(2 * n, BlockMasking((4, 4), max_num_patches=8), random.Random(seed), (0.1, 0.5), 0.5)


# --- the official losses (dinov2/loss/*.py), verbatim but for the distributed calls ---------------------------
def official_sinkhorn(teacher_output, teacher_temp, n_iterations=3):
    teacher_output = teacher_output.float()
    Q = torch.exp(teacher_output / teacher_temp).t()
    B, K = Q.shape[1], Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(n_iterations):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def official_dino_loss(student_output_list, teacher_list, student_temp=0.1):
    total_loss = 0
    for s in student_output_list:
        lsm = F.log_softmax(s / student_temp, dim=-1)
        for t in teacher_list:
            total_loss -= torch.sum(t * lsm, dim=-1).mean()
    return total_loss


def official_koleo(x, eps=1e-8):
    x = F.normalize(x, eps=eps, p=2, dim=-1)
    dots = torch.mm(x, x.t())
    n = x.shape[0]
    dots.view(-1)[:: (n + 1)].fill_(-1)
    _, nearest = torch.max(dots, dim=1)
    return -torch.log(torch.nn.PairwiseDistance(2, eps=eps)(x, x[nearest]) + eps).mean()


def official_step(method, views, masks, temp):
    """ssl_meta_arch.py:132-342 (forward_backward's losses) and the center updates, in one process."""
    cfg, n, n_local = method.cfg, views[0].shape[0], len(views) - 2
    prefix = method.backbone.num_prefix_tokens
    glob = torch.cat(views[:2])
    t_tokens = method.teacher_backbone.forward_features(glob)
    t_cls = t_tokens[:, 0].chunk(2)
    t_cls = torch.cat((t_cls[1], t_cls[0]))  # "A is matched to B"
    t_heads = (method.teacher_head, method.teacher_ibot_head if cfg.ibot_separate_head else method.teacher_head)
    t_cls_out = t_heads[0](t_cls)
    t_patch_out = t_heads[1](t_tokens[:, prefix:].flatten(0, 1)[masks.flatten()])
    if cfg.centering == "centering":
        t_dino = F.softmax((t_cls_out - method.center) / temp, dim=-1).view(2, n, -1)
        t_ibot = F.softmax((t_patch_out - method.center2) / temp, dim=-1)
    else:
        t_dino = official_sinkhorn(t_cls_out, temp).view(2, n, -1)
        t_ibot = official_sinkhorn(t_patch_out, temp)
    tokens = forward_mask_token(method.backbone, glob, masks, method.mask_token[0])
    s_local = torch.cat([method.backbone(v) for v in views[2:]]) if n_local else None
    s_global = tokens[:, 0]
    s_patch = tokens[:, prefix:].flatten(0, 1)[masks.flatten()]
    s_patch_out = (method.ibot_head if cfg.ibot_separate_head else method.head)(s_patch)
    n_local_terms, n_global_terms = max(n_local * 2, 1), 2
    loss = 0
    if n_local:
        loss += official_dino_loss(method.head(s_local).chunk(n_local), t_dino) / (n_global_terms + n_local_terms)
    loss += official_dino_loss([method.head(s_global)], [t_dino.flatten(0, 1)]) * 2 / (n_global_terms + n_local_terms)
    loss += 0.1 * sum(official_koleo(p) for p in s_global.chunk(2))
    weights = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
    ibot = torch.sum(t_ibot * F.log_softmax(s_patch_out / 0.1, dim=-1), dim=-1)
    loss += -(ibot * weights).sum() / masks.shape[0] * 2 * 0.5
    center = method.center * 0.9 + t_cls_out.mean(dim=0, keepdim=True) * 0.1
    center2 = method.center2 * 0.9 + t_patch_out.mean(dim=0, keepdim=True) * 0.1
    return loss, center, center2


@pytest.mark.parametrize("centering", ["centering", "sinkhorn_knopp"])
@pytest.mark.parametrize("separate,local,reg", [(False, 3, 0), (True, 3, 2), (False, 0, 0)])
def test_loss_and_centers_equal_the_official_meta_architecture(centering, separate, local, reg):
    method = _method(centering=centering, ibot_separate_head=separate, reg=reg)
    views, n = _views(local=local), 6
    masks = _masks(n)
    method.draw_masks = serve(masks)
    with torch.no_grad():
        method.center.copy_(torch.randn_like(method.center))
        method.center2.copy_(torch.randn_like(method.center2))
    method._teacher_temp = 0.05
    with torch.no_grad():
        ref, ref_c, ref_c2 = official_step(method, views, masks, 0.05)
    out = method(views)  # no stochastic depth configured: the training forward is the reference's
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)
    if centering == "centering":
        torch.testing.assert_close(method.center, ref_c)
        torch.testing.assert_close(method.center2, ref_c2)


def test_koleo_equals_a_loop_over_nearest_neighbours():
    torch.manual_seed(0)
    x = torch.randn(10, 5)
    u = x / x.norm(dim=1, keepdim=True)
    ref = 0.0
    for i in range(10):
        d = min(float((u[i] - u[j] + 1e-8).norm()) for j in range(10) if j != i)  # the nearest: largest dot
        ref -= math.log(d + 1e-8)
    assert koleo_loss(x).item() == pytest.approx(ref / 10, rel=1e-5)
    assert koleo_loss(x).item() == pytest.approx(official_koleo(x).item(), rel=1e-6)


def _koleo_rank(rank, world, x, gather):
    b = x.shape[0] // world
    xr = x[rank * b : (rank + 1) * b].clone().requires_grad_(True)
    loss = koleo_loss(xr, gather=gather)
    loss.backward()
    return loss.item(), xr.grad


def test_koleo_gathered_on_two_processes_equals_one_process():
    torch.manual_seed(1)
    x = torch.randn(12, 6)
    full = x.clone().requires_grad_(True)
    loss = koleo_loss(full)
    loss.backward()
    ranks = run_distributed(_koleo_rank, 2, x, True)
    assert (ranks[0][0] + ranks[1][0]) / 2 == pytest.approx(loss.item(), rel=1e-5)
    grad = torch.cat([g for _, g in ranks]) / 2  # DDP averages the ranks' gradients
    torch.testing.assert_close(grad, full.grad, rtol=1e-4, atol=1e-7)
    # the official per-rank search is a different loss (each half's own neighbours)
    per_rank = run_distributed(_koleo_rank, 2, x, False)
    assert [r[0] for r in per_rank] == pytest.approx([koleo_loss(x[:6]).item(), koleo_loss(x[6:]).item()], rel=1e-5)


def _dinov2_rank(rank, world, views, masks, n, centering):
    method = _method(centering=centering)
    b = n // world
    crops = masks.view(2, n, -1)
    method.draw_masks = serve(torch.cat([crops[k, rank * b : (rank + 1) * b] for k in range(2)]))
    out = method([v[rank * b : (rank + 1) * b] for v in views])
    out.loss.backward()
    grads = {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None}
    return out.loss.item(), method.center.clone(), method.center2.clone(), grads


def _balanced_masks(n: int) -> torch.Tensor:
    """Masks with the same number of masked patches on each rank's half (the official patch center is the
    mean over ranks of each rank's mean, which equals the whole batch's mean then)."""
    m = torch.zeros(2, n, 16, dtype=torch.bool)
    m[0, 0, :5] = m[1, 1, 3:6] = m[0, n // 2, 8:13] = m[1, n // 2 + 2, 0:3] = True
    return m.flatten(0, 1)


@pytest.mark.parametrize("centering", ["centering", "sinkhorn_knopp"])
def test_two_processes_equal_one_process(centering):
    """Sinkhorn's all-reduced sums, the centers, KoLeo's gather and the per-image patch means: the mean of the
    ranks' losses, their centers and their averaged gradients equal one process with the whole batch."""
    n, views = 6, _views(6, seed=2)
    masks = _balanced_masks(n)
    method = _method(centering=centering)
    method.draw_masks = serve(masks)
    out = method(views)
    out.loss.backward()
    ranks = run_distributed(_dinov2_rank, 2, views, masks, n, centering)
    assert sum(r[0] for r in ranks) / 2 == pytest.approx(out.loss.item(), rel=1e-5)
    for _, c, c2, _ in ranks:
        torch.testing.assert_close(c, method.center, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c2, method.center2, rtol=1e-5, atol=1e-6)
    for k, p in method.named_parameters():  # float32 sums in another order: to 1e-4 of each gradient's norm
        if p.grad is not None:
            err = ((ranks[0][3][k] + ranks[1][3][k]) / 2 - p.grad).norm()
            assert err <= 1e-4 * p.grad.norm() + 1e-8, f"{k}: {err:.3g} against {p.grad.norm():.3g}"


def test_layer_decay_groups_by_hand():
    method = _method(reg=1)
    got = {}
    for g in method.param_groups():
        for p in g["params"]:
            got[id(p)] = (g["lr_scale"], g.get("weight_decay"))
    d = 0.9
    expect = {
        "backbone.cls_token": (d**3, None),
        "backbone.reg_token": (d**3, None),
        "backbone.pos_embed": (d**3, None),
        "mask_token": (d**3, None),
        "backbone.patch_embed.proj.weight": (d**3 * 0.2, None),
        "backbone.patch_embed.proj.bias": (d**3 * 0.2, 0.0),
        "backbone.blocks.0.attn.qkv.weight": (d**2, None),
        "backbone.blocks.0.ls1.gamma": (d**2, 0.0),
        "backbone.blocks.1.mlp.fc2.weight": (d**1, None),
        "backbone.blocks.1.norm2.weight": (d**1, 0.0),
        "backbone.norm.weight": (1.0, 0.0),
        "head.mlp.0.weight": (1.0, None),
        "head.last_layer.parametrizations.weight.original0": (1.0, None),  # g (out, 1): decayed, as official
    }
    named = dict(method.named_parameters())
    for name, (scale, wd) in expect.items():
        assert got[id(named[name])][0] == pytest.approx(scale), name
        assert got[id(named[name])][1] == wd, name
    assert all(id(p) in got for p in method.parameters() if p.requires_grad)
    assert not any(id(p) in got for n, p in named.items() if n.startswith("teacher_"))


def test_gradients_are_clipped_per_module():
    method = _method(ibot_separate_head=True)
    method.draw_masks = serve(_masks(6))
    method(_views()).loss.backward()
    clip_grad(method, 1e-3, "per_module")
    for group in method.clip_groups():
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in group if p.grad is not None]))
        assert norm == pytest.approx(1e-3, rel=1e-4)
    assert len(method.clip_groups()) == 3 and any(p is method.mask_token for p in method.clip_groups()[0])


def test_teacher_temperature_rises_per_step():
    cfg = DINOv2Config(warmup_teacher_temp_epochs=3)
    ref = np.concatenate([np.linspace(0.04, 0.07, 30), np.full(20, 0.07)])  # CosineScheduler with a warm-up only
    np.testing.assert_allclose([warmup_temperature(s, 10, cfg) for s in range(50)], ref, rtol=0, atol=1e-12)
    method = _method()
    method.on_step(Progress(15, 100, 10, seed=1))
    assert method._teacher_temp == pytest.approx(0.04 + 0.03 * 15 / 299)


def test_masks_are_dinov2s_collate_seeded_by_step():
    method = _method()
    method.on_step(Progress(4, 100, 10, seed=9))
    a = method.draw_masks(16, (4, 4), torch.device("cpu"))
    method.on_step(Progress(4, 100, 10, seed=9))
    assert torch.equal(a, method.draw_masks(16, (4, 4), torch.device("cpu")))
    assert (a.sum(dim=1) > 0).sum() <= 8 and (a.sum(dim=1) == 0).sum() >= 8  # half the crops masked at most
    assert method._maskers[(4, 4)].max_num_patches == 8  # train.py:170-173: half the grid per block
