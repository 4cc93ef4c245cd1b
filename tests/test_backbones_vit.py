"""ViT backbones (timm): widths, the CLS feature, MoCo v3's sin-cos position embedding, frozen patch
projection and initialization, and inputs of other sizes. Tiny depths keep these fast."""

from __future__ import annotations

import math

import torch
from timm.models.vision_transformer import VisionTransformer

from selfsup.backbones import build_backbone
from selfsup.backbones.vit import sincos_pos_embed_2d
from selfsup.methods import build_method
from selfsup.methods.mocov3 import MoCoV3Config


def _tiny_vit(**kw):
    torch.manual_seed(0)
    return build_backbone("vit_small_patch16", depth=1, **kw)


def test_num_features_and_architecture():
    for name, width, heads, patch in [
        ("vit_small_patch16", 384, 6, 16),
        ("vit_base_patch16", 768, 12, 16),
        ("vit_small_patch8", 384, 6, 8),
    ]:
        m = build_backbone(name, depth=1)
        assert m.num_features == width and m.blocks[0].attn.num_heads == heads
        assert m.patch_embed.proj.kernel_size == (patch, patch)
    assert _tiny_vit(num_heads=12).blocks[0].attn.num_heads == 12  # MoCo v3's ViT-S


def test_forward_is_the_cls_token_after_the_final_norm_at_two_sizes():
    m = _tiny_vit(img_size=32).eval()
    for size in (32, 48):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            y = m(x)
            tokens = m.forward_features(x)
        assert y.shape == (2, 384) and torch.isfinite(y).all()
        assert tokens.shape[1] == 1 + (size // 16) ** 2
        torch.testing.assert_close(y, tokens[:, 0])


def reference_sincos(h, w, dim, temperature=10000.0):
    """Token (i, j) of a row-major h x w grid: sin/cos of i, then sin/cos of j, at frequencies
    temperature ** (-f / (dim / 4)), f = 0 .. dim/4 - 1 (MoCo v3, square grids)."""
    quarter = dim // 4
    out = torch.zeros(h * w, dim, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            for f in range(quarter):
                omega = 1.0 / temperature ** (f / quarter)
                out[i * w + j, f] = math.sin(i * omega)
                out[i * w + j, quarter + f] = math.cos(i * omega)
                out[i * w + j, 2 * quarter + f] = math.sin(j * omega)
                out[i * w + j, 3 * quarter + f] = math.cos(j * omega)
    return out.float()


def test_sincos_position_embedding_is_fixed_and_matches_a_loop():
    torch.testing.assert_close(sincos_pos_embed_2d(3, 3, 16), reference_sincos(3, 3, 16))
    m = _tiny_vit(img_size=64, pos_embed="sincos")
    assert not m.pos_embed.requires_grad
    assert torch.equal(m.pos_embed[0, 0], torch.zeros(384))  # the CLS slot
    torch.testing.assert_close(m.pos_embed[0, 1:], reference_sincos(4, 4, 384))


def test_frozen_patch_embedding_gets_no_gradient_and_no_optimizer_slot():
    torch.manual_seed(0)
    backbone = build_backbone("vit_small_patch16", depth=1, img_size=32, freeze_patch_embed=True, pos_embed="sincos")
    assert all(not p.requires_grad for p in backbone.patch_embed.parameters())
    method = build_method("mocov3", backbone, MoCoV3Config(proj_hidden_dim=16, pred_hidden_dim=16, proj_out_dim=8))
    x = torch.randn(4, 3, 32, 32)
    before = backbone.patch_embed.proj.weight.clone()
    method([x, x.flip(-1)]).loss.backward()
    assert backbone.patch_embed.proj.weight.grad is None and backbone.pos_embed.grad is None
    assert backbone.blocks[0].attn.qkv.weight.grad is not None
    optimized = {id(p) for g in method.param_groups() for p in g["params"]}
    assert id(backbone.patch_embed.proj.weight) not in optimized and id(backbone.pos_embed) not in optimized
    assert torch.equal(backbone.patch_embed.proj.weight, before)


def test_moco_initialization():
    m = _tiny_vit(weight_init="moco")
    proj = m.patch_embed.proj
    bound = math.sqrt(6.0 / (3 * 16 * 16 + 384))
    assert proj.weight.abs().max() <= bound and proj.weight.abs().max() > 0.9 * bound
    assert torch.equal(proj.bias, torch.zeros(384))
    qkv = m.blocks[0].attn.qkv.weight  # (3 * 384, 384): Q, K and V each xavier-uniform
    assert qkv.abs().max() <= math.sqrt(6.0 / (384 + 384))
    assert torch.equal(m.blocks[0].mlp.fc1.bias, torch.zeros_like(m.blocks[0].mlp.fc1.bias))


def test_state_dict_loads_into_plain_timm():
    ours = _tiny_vit(img_size=32, pos_embed="sincos").eval()
    plain = VisionTransformer(img_size=32, patch_size=16, embed_dim=384, depth=1, num_heads=6, num_classes=0)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), ours(x))


def test_layer_scale_registers_and_uniform_drop_path_as_dinov2():
    m = build_backbone(
        "vit_small_patch14",
        img_size=28,
        depth=2,
        layer_scale=1e-5,
        reg_tokens=4,
        drop_path_rate=0.2,
        drop_path_uniform=True,
    )
    assert m.num_prefix_tokens == 5 and m.pos_embed.shape == (1, 4, 384)  # registers and CLS: no position
    assert all(torch.equal(b.ls1.gamma, torch.full((384,), 1e-5)) for b in m.blocks)
    assert [b.drop_path1.drop_prob for b in m.blocks] == [0.2, 0.2]  # timm's own rule rises: 0, 0.2
    assert [b.drop_path2.drop_prob for b in m.blocks] == [0.2, 0.2]
    m.eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():  # by hand: [CLS, 4 registers, patches + position], then residuals with gains
        p = m.patch_embed(x).flatten(1, 2) + m.pos_embed
        t = torch.cat([m.cls_token.expand(2, -1, -1), m.reg_token.expand(2, -1, -1), p], dim=1)
        for b in m.blocks:
            t = t + b.ls1.gamma * b.attn(b.norm1(t))
            t = t + b.ls2.gamma * b.mlp(b.norm2(t))
        torch.testing.assert_close(m(x), m.norm(t)[:, 0])
    # and the weights load into timm's own DINOv2 architecture with registers
    import timm

    plain = timm.create_model("vit_small_patch14_reg4_dinov2", img_size=28, depth=2, num_classes=0).eval()
    plain.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain(x), m(x))
