"""iBOT (methods/ibot.py): masks equal to the official loader's, the loss equal to the official iBOTLoss on
all patches, the schedules, the frozen last layers, resumable masks, and two processes against one."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfsup.backbones import build_backbone
from selfsup.methods import Progress, build_method
from selfsup.methods.ibot import IBOTConfig, patch_temperature
from selfsup.nn.masking import ibot_masks

from _dist import run_distributed
from _util import _step, tiny_config

LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))


def official_block_mask(rng, H, W, ratios, variations, log_aspect=LOG_ASPECT):
    """bytedance/ibot loader.py:33-49 and :54-100, verbatim but for ``random`` -> ``rng`` (lists as the
    init leaves them: a single candidate unwrapped to a scalar)."""
    if len(ratios) > 1:
        pred_ratio = []
        for prm, prv in zip(ratios, variations):
            pr = rng.uniform(prm - prv, prm + prv) if prv > 0 else prm
            pred_ratio.append(pr)
        pred_ratio = rng.choice(pred_ratio)
    else:
        prm, prv = ratios[0], variations[0]
        pred_ratio = rng.uniform(prm - prv, prm + prv) if prv > 0 else prm
    high = pred_ratio * H * W
    mask = np.zeros((H, W), dtype=bool)
    mask_count = 0
    while mask_count < high:
        max_mask_patches = high - mask_count
        delta = 0
        for _attempt in range(10):
            low = (min(H, W) // 3) ** 2
            target_area = rng.uniform(low, max_mask_patches)
            aspect_ratio = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < W and h < H:
                top = rng.randint(0, H - h)
                left = rng.randint(0, W - w)
                num_masked = mask[top : top + h, left : left + w].sum()
                if 0 < h * w - num_masked <= max_mask_patches:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if mask[i, j] == 0:
                                mask[i, j] = 1
                                delta += 1
            if delta > 0:
                break
        if delta == 0:
            break
        else:
            mask_count += delta
    return mask


@pytest.mark.parametrize("grid,ratios,variations", [((14, 14), [0.0, 0.3], [0.0, 0.2]), ((8, 8), [0.3], [0.0])])
def test_masks_equal_the_official_loader(grid, ratios, variations):
    ours = ibot_masks(64, grid, random.Random(5), ratios, variations)
    rng = random.Random(5)
    ref = np.stack([official_block_mask(rng, *grid, ratios, variations).flatten() for _ in range(64)])
    assert np.array_equal(ours.numpy(), ref)


def test_mask_statistics_are_the_papers():
    """The recipe (pred_ratio 0 0.3, var 0 0.2): half the crops unmasked, the others at 10-50% of 196 patches
    in blocks (never more than the drawn share; the paper's r ~ U(0.1, 0.5) with probability 0.5)."""
    m = ibot_masks(4000, (14, 14), random.Random(0), [0.0, 0.3], [0.0, 0.2])
    share = m.float().mean(dim=1)
    masked = share[share > 0]
    assert abs(len(masked) / 4000 - 0.5) < 0.03
    assert masked.max() <= 0.5 + 1e-6  # blocks never overshoot the drawn share
    assert 0.26 < float(masked.mean()) <= 0.30  # U(0.1, 0.5) has mean 0.3; blocks may stop short of it
    rand = ibot_masks(200, (14, 14), random.Random(0), [0.3], [0.0], shape="rand")
    assert (rand.sum(dim=1) == int(0.3 * 196)).all()


def test_patch_temperature_schedule():
    cfg = IBOTConfig(pred_start_epoch=5)
    ref = np.concatenate([np.full(5, 0.04), np.linspace(0.04, 0.07, 30), np.full(65, 0.07)])  # main_ibot.py:507-512
    np.testing.assert_allclose([patch_temperature(e, cfg) for e in range(100)], ref, rtol=0, atol=1e-12)
    assert patch_temperature(29, IBOTConfig()) == pytest.approx(0.07)


def _method(shared: bool = True, **kw):
    torch.manual_seed(0)
    backbone = build_backbone("vit_tiny_patch4", img_size=16, depth=2, **kw)
    cfg = IBOTConfig(out_dim=48, patch_out_dim=40, hidden_dim=32, bottleneck_dim=16, shared_head=shared)
    return build_method("ibot", backbone, cfg)


def _views(n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 16, 16, generator=g) for _ in range(2)] + [torch.randn(n, 3, 8, 8, generator=g)] * 3


def official_ibot_loss(student_output, teacher_output, student_local_cls, student_mask, center, center2, temp, temp2):
    """main_ibot.py:514-572 (iBOTLoss.forward and update_center) on all patches, one process."""
    student_cls, student_patch = student_output
    teacher_cls, teacher_patch = teacher_output
    student_cls = torch.cat([student_cls, student_local_cls])
    ngcrops, ncrops = 2, 2 + len(student_local_cls) // len(student_mask[0])
    student_cls_c = (student_cls / 0.1).chunk(ncrops)
    student_patch_c = (student_patch / 0.1).chunk(ngcrops)
    teacher_cls_c = F.softmax((teacher_cls - center) / temp, dim=-1).detach().chunk(ngcrops)
    teacher_patch_c = F.softmax((teacher_patch - center2) / temp2, dim=-1).detach().chunk(ngcrops)
    total_loss1, n_loss_terms1, total_loss2, n_loss_terms2 = 0, 0, 0, 0
    for q in range(len(teacher_cls_c)):
        for v in range(len(student_cls_c)):
            if v == q:
                loss2 = torch.sum(-teacher_patch_c[q] * F.log_softmax(student_patch_c[v], dim=-1), dim=-1)
                mask = student_mask[v].flatten(-2, -1)
                loss2 = torch.sum(loss2 * mask.float(), dim=-1) / mask.sum(dim=-1).clamp(min=1.0)
                total_loss2 += loss2.mean()
                n_loss_terms2 += 1
            else:
                loss1 = torch.sum(-teacher_cls_c[q] * F.log_softmax(student_cls_c[v], dim=-1), dim=-1)
                total_loss1 += loss1.mean()
                n_loss_terms1 += 1
    loss = total_loss1 / n_loss_terms1 + total_loss2 / n_loss_terms2
    new_center = center * 0.9 + teacher_cls.mean(dim=0, keepdim=True) * 0.1
    new_center2 = center2 * 0.9 + teacher_patch.mean(1).mean(dim=0, keepdim=True) * 0.1
    return loss, new_center, new_center2


def serve(crops):
    """A ``draw_masks`` that hands out the given crops' masks in turn (two calls per forward)."""
    turn = itertools.cycle(list(crops))
    return lambda batch, grid, device: next(turn)


def _fixed_masks(n: int, grid=(4, 4), seed: int = 3) -> torch.Tensor:
    m = ibot_masks(2 * n, grid, random.Random(seed), [0.0, 0.3], [0.0, 0.2])
    m[0, :5] = True  # at least one masked crop
    return m


@pytest.mark.parametrize("shared", [True, False])
def test_loss_and_centers_equal_the_official_iBOTLoss(shared):
    method = _method(shared, reg_tokens=2)  # registers: the patch tokens come after them
    views, n = _views(), 6
    masks = _fixed_masks(n)
    method.draw_masks = serve(masks.view(2, n, -1))
    with torch.no_grad():
        method.center.copy_(torch.randn_like(method.center))
        method.center2.copy_(torch.randn_like(method.center2))
    center, center2 = method.center.clone(), method.center2.clone()
    method._teacher_temp, method._patch_temp = 0.05, 0.06
    out = method(views)
    # the reference: every patch through the heads, masks in the official layout (2 crops, B, h, w)
    with torch.no_grad():
        from selfsup.backbones.vit import forward_mask_token

        bb, tb, head, thead = method.backbone, method.teacher_backbone, method.head, method.teacher_head
        tokens = forward_mask_token(bb, torch.cat(views[:2]), masks, method.mask_token[0])
        s_cls, s_patch = head(tokens[:, 0]), head.patches(tokens[:, 3:])
        t_tokens = tb.forward_features(torch.cat(views[:2]))
        t_cls, t_patch = thead(t_tokens[:, 0]), thead.patches(t_tokens[:, 3:])
        local = torch.cat([head(bb(v)) for v in views[2:]])
        ref, ref_c, ref_c2 = official_ibot_loss(
            (s_cls, s_patch), (t_cls, t_patch), local, masks.view(2, n, 4, 4), center, center2[:, None], 0.05, 0.06
        )
    method.eval()  # no stochastic depth in the student: compare the loss in evaluation mode
    with torch.no_grad():
        method.center.copy_(center)
        method.center2.copy_(center2)
        again = method(views)
    torch.testing.assert_close(again.loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(method.center, center)  # evaluation does not move the centers
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)  # no drop path configured: train = eval
    # the training forward moved both centers as the official update_center
    method.train()
    with torch.no_grad():
        method.center.copy_(center)
        method.center2.copy_(center2)
    method(views)
    torch.testing.assert_close(method.center, ref_c)
    torch.testing.assert_close(method.center2, ref_c2[:, 0])


@pytest.mark.parametrize("epoch,frozen", [(0.5, True), (1.0, False)])
def test_both_last_layers_frozen_in_the_first_epoch(epoch, frozen):
    cfg = tiny_config("ibot", extra=["method.out_dim=64", "method.hidden_dim=32", "method.shared_head=false"])
    from selfsup.app.runs import build_from_config

    method = build_from_config(cfg)
    layers = [method.head.last_layer, method.head.last_layer2]
    before = [[p.detach().clone() for p in m.parameters()] for m in layers]
    token = method.mask_token.detach().clone()
    _step(method, cfg, epoch)
    assert not torch.equal(method.mask_token, token)  # the mask token trains from the first step
    for m, b in zip(layers, before):
        assert all(torch.equal(p, q) for p, q in zip(m.parameters(), b)) == frozen


def test_masks_follow_seed_step_and_rank_so_a_resumed_run_draws_the_same():
    method = _method()
    draws = []
    for step in (7, 7, 8):
        method.on_step(Progress(step, 100, 10, seed=3))
        draws.append(method.draw_masks(32, (4, 4), torch.device("cpu")))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    method.on_step(Progress(60, 100, 10, seed=3))  # pred_start_epoch > epoch: no masks
    method.cfg.pred_start_epoch = 7
    method.on_step(Progress(60, 100, 10, seed=3))
    assert not method.draw_masks(8, (4, 4), torch.device("cpu")).any()


def _ibot_rank(rank, world, views, masks, n):
    method = _method(reg_tokens=1)
    b = n // world
    crops = masks.view(2, n, -1)
    local = [crops[k, rank * b : (rank + 1) * b] for k in range(2)]
    method.draw_masks = serve(local)
    out = method([v[rank * b : (rank + 1) * b] for v in views])
    out.loss.backward()
    return out.loss.item(), method.center.clone(), method.center2.clone(), method.mask_token.grad.clone()


def test_two_processes_equal_one_process():
    """The centers' all-reduce and the per-image means: the mean of the ranks' losses, their centers and their
    averaged gradients equal one process holding the whole batch."""
    n, views = 6, _views(6, seed=1)
    masks = _fixed_masks(n, seed=4)
    method = _method(reg_tokens=1)
    method.draw_masks = serve(masks.view(2, n, -1))
    out = method(views)
    out.loss.backward()
    ranks = run_distributed(_ibot_rank, 2, views, masks, n)
    assert sum(r[0] for r in ranks) / 2 == pytest.approx(out.loss.item(), rel=1e-5)
    for _, c, c2, _ in ranks:
        torch.testing.assert_close(c, method.center, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c2, method.center2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close((ranks[0][3] + ranks[1][3]) / 2, method.mask_token.grad, rtol=1e-4, atol=1e-7)
