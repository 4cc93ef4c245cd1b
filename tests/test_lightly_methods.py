"""benchmarks/lightly_methods.py: lightly's iBOT and DINOv2 wrappers run one step on a tiny ViT (finite loss,
a gradient on the mask token, the EMA), draw selfsup's masks, and DINOv2's optimizer groups are selfsup's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.methods import Progress, build_method
from selfsup.methods.dinov2 import DINOv2Config
from selfsup.methods.ibot import IBOTConfig
from selfsup.nn.ema import ema_update

pytest.importorskip("lightly")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from lightly_methods import LIGHTLY  # noqa: E402

HEAD = dict(out_dim=48, hidden_dim=32, bottleneck_dim=16)
CONFIGS = {
    "ibot": lambda **kw: IBOTConfig(**HEAD, shared_head=True, **kw),
    "dinov2": lambda **kw: DINOv2Config(**HEAD, **kw),
}


def _backbone():
    torch.manual_seed(0)
    return build_backbone("vit_tiny_patch4", img_size=16, depth=2)


def _views(n: int = 4):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(n, 3, 16, 16, generator=g) for _ in range(2)] + [
        torch.randn(n, 3, 8, 8, generator=g) for _ in range(2)
    ]


@pytest.mark.parametrize(
    "name, kw", [("ibot", {}), ("dinov2", {}), ("dinov2", {"ibot_separate_head": True, "ibot_out_dim": 40})]
)
def test_one_step(name, kw):
    method = LIGHTLY[name](_backbone(), CONFIGS[name](freeze_last_layer_epochs=0, **kw))
    progress = Progress(step=3, total_steps=10, steps_per_epoch=5, seed=0)
    method.train()
    method.on_step(progress)
    out = method(_views())
    assert torch.isfinite(out.loss)
    out.loss.backward()
    method.after_backward(progress)
    assert method.mask_token.grad is not None and method.mask_token.grad.abs().sum() > 0
    assert all(torch.isfinite(v).all() for v in out.logs.values())
    before = [p.clone() for p in method.teacher_backbone.parameters()]
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(0.01)
    for online, target in method.ema_pairs():
        ema_update(online, target, method.ema_momentum(progress), method.ema_buffers)
    assert any(not torch.equal(a, b) for a, b in zip(before, method.teacher_backbone.parameters()))
    # every trainable parameter in exactly one optimizer group, no teacher parameter
    grouped = [id(p) for g in method.param_groups() for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in method.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_masks_are_selfsups(name):
    cfg = CONFIGS[name]()
    ours, theirs = build_method(name, _backbone(), cfg), LIGHTLY[name](_backbone(), cfg)
    for step in (0, 7):
        progress = Progress(step=step, total_steps=20, steps_per_epoch=5, seed=3)
        ours.on_step(progress)
        theirs.on_step(progress)
        assert torch.equal(ours.draw_masks(8, (4, 4), "cpu"), theirs.draw_masks(8, (4, 4), "cpu"))


def test_ibot_without_masks_has_no_patch_loss():
    method = LIGHTLY["ibot"](_backbone(), CONFIGS["ibot"](pred_start_epoch=1))
    method.on_step(Progress(step=0, total_steps=10, steps_per_epoch=5))
    out = method(_views())
    assert out.logs["patch_loss"] == 0 and torch.isfinite(out.loss)
    assert torch.isfinite(method.patch_criterion.center.value).all()


def test_dinov2_groups_match_selfsup():
    cfg = CONFIGS["dinov2"]()
    ours, theirs = build_method("dinov2", _backbone(), cfg), LIGHTLY["dinov2"](_backbone(), cfg)

    def summary(method):
        return sorted(
            (g["lr_scale"], g.get("weight_decay", -1.0), sum(p.numel() for p in g["params"]))
            for g in method.param_groups()
        )

    # the same rates, decay and sizes (lightly's heads have selfsup's shapes), and the same clipping groups
    assert summary(ours) == summary(theirs)
    sizes = [sum(p.numel() for p in g) for g in ours.clip_groups()]
    assert sizes == [sum(p.numel() for p in g) for g in theirs.clip_groups()]


def test_dinov2_rejects_sinkhorn():
    with pytest.raises(ValueError, match="centering"):
        LIGHTLY["dinov2"](_backbone(), CONFIGS["dinov2"](centering="sinkhorn_knopp"))
