"""Vision Transformers (Dosovitskiy et al. 2021, arXiv:2010.11929) through timm, returning the CLS
token after the final LayerNorm.

The model is timm's own ``VisionTransformer`` (``num_classes=0``), so its state dict carries timm's key
names. Inputs of any size divisible by the patch size work (``dynamic_img_size``: the position
embedding is resampled from the ``img_size`` grid). Options for MoCo v3 (Chen, Xie, He 2021,
arXiv:2104.02057, sec. 4 and the official ``vits.py``):

- ``pos_embed="sincos"``: the fixed 2-D sin-cos position embedding (zero for the CLS token), not trained;
- ``freeze_patch_embed=True``: the patch projection stays at its random initialization (sec. 4.2);
- ``weight_init="moco"``: xavier-uniform linear layers with Q, K, V treated separately, zero biases,
  and xavier-uniform on the flattened patch projection.

For MAE (He et al. 2021, arXiv:2111.06377; facebookresearch/mae ``models_mae.py``):

- ``weight_init="mae"``: ``initialize_weights`` (models_mae.py:65-93): xavier-uniform on every linear
  layer (the QKV projection as one matrix), zero biases, LayerNorms at 1 and 0, xavier-uniform on the
  flattened patch projection (its bias keeps PyTorch's default, as there), CLS token normal(std 0.02);
- :func:`forward_masked`: the encoder on the visible patches only (``forward_encoder``,
  models_mae.py:150-170), with :func:`random_masking` (models_mae.py:123-148). The module's own forward
  (the CLS feature that evaluation uses) and its state dict are unchanged.

For DINOv2 (Oquab et al. 2023, arXiv:2304.07193; facebookresearch/dinov2 ``models/vision_transformer.py``,
``layers/layer_scale.py``) and registers (Darcet et al. 2023, arXiv:2309.16588):

- ``layer_scale=1e-5``: LayerScale (a learned per-channel gain on each residual branch, initialized to that
  value; timm's ``init_values``);
- ``reg_tokens=4``: register tokens after the CLS token, without position embedding (timm's ``reg_tokens``
  with ``no_embed_class``, the layout of timm's ``vit_*_patch14_reg4_dinov2``; the official model adds the
  CLS token's position embedding to it, the same sum once trained);
- ``drop_path_uniform=True``: the same stochastic-depth rate in every block (``drop_path_uniform``), not
  timm's linear increase from 0.

``num_heads=0`` keeps the architecture's own head count (6 for ViT-S, as in DeiT and DINO); MoCo v3's
ViT-S uses 12.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from timm.layers import DropPath
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .registry import BACKBONES

ARCHS = {
    "vit_small_patch16": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "vit_small_patch8": dict(patch_size=8, embed_dim=384, depth=12, num_heads=6),
    # DINOv2's ViT-S/14 and ViT-B/14 (timm's vit_small_patch14_dinov2, vit_base_patch14_dinov2)
    "vit_small_patch14": dict(patch_size=14, embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch14": dict(patch_size=14, embed_dim=768, depth=12, num_heads=12),
    # 32-px inputs (an 8 x 8 grid): solo-learn's CIFAR MAE ViT-S (patch 4), and DeiT-Tiny's widths at patch 4
    "vit_small_patch4": dict(patch_size=4, embed_dim=384, depth=12, num_heads=6),
    "vit_tiny_patch4": dict(patch_size=4, embed_dim=192, depth=12, num_heads=3),
}


def sincos_pos_embed_2d(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """``(grid_h * grid_w, dim)``: MoCo v3's ``build_2d_sincos_position_embedding``.

    Quarters of the channels hold ``sin, cos`` of the first grid coordinate, then ``sin, cos`` of the
    second, at frequencies ``temperature ** (-i / (dim / 4))``. As in the official code (``meshgrid``
    of (w, h) with 'ij' indexing), the first coordinate runs slowest over the token order.
    """
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    a, b = torch.meshgrid(
        torch.arange(grid_w, dtype=torch.float32), torch.arange(grid_h, dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    out_a = a.flatten()[:, None] * omega[None]
    out_b = b.flatten()[:, None] * omega[None]
    return torch.cat([out_a.sin(), out_a.cos(), out_b.sin(), out_b.cos()], dim=1)


def _vit(
    arch: str,
    *,
    img_size: int = 224,
    num_heads: int = 0,
    drop_path_rate: float = 0.0,
    pos_embed: str = "learn",
    freeze_patch_embed: bool = False,
    weight_init: str = "timm",
    embed_dim: int | None = None,
    depth: int | None = None,
    mlp_ratio: float = 4.0,
    layer_scale: float = 0.0,
    reg_tokens: int = 0,
    drop_path_uniform: bool = False,
) -> VisionTransformer:
    spec = dict(ARCHS[arch])
    spec["embed_dim"] = embed_dim or spec["embed_dim"]
    spec["depth"] = depth or spec["depth"]
    spec["num_heads"] = num_heads or spec["num_heads"]
    if weight_init not in ("timm", "moco", "mae"):
        raise ValueError(f"backbone.weight_init: {weight_init!r} is not 'timm', 'moco' or 'mae'")
    if pos_embed not in ("learn", "sincos"):
        raise ValueError(f"backbone.pos_embed: {pos_embed!r} is not 'learn' or 'sincos'")
    model = VisionTransformer(
        img_size=img_size,
        mlp_ratio=mlp_ratio,
        qkv_bias=True,
        num_classes=0,
        global_pool="token",
        dynamic_img_size=True,
        drop_path_rate=drop_path_rate,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        weight_init="moco" if weight_init == "moco" else "",
        init_values=layer_scale or None,
        reg_tokens=reg_tokens,
        no_embed_class=reg_tokens > 0,
        **spec,
    )
    if drop_path_uniform and drop_path_rate > 0:
        for block in model.blocks:
            block.drop_path1 = DropPath(drop_path_rate)
            block.drop_path2 = DropPath(drop_path_rate)
    proj = model.patch_embed.proj
    if weight_init == "moco":  # xavier-uniform over the flattened (3 * p * p) -> dim projection
        val = math.sqrt(6.0 / float(proj.in_channels * math.prod(proj.kernel_size) + proj.out_channels))
        nn.init.uniform_(proj.weight, -val, val)
        nn.init.zeros_(proj.bias)
    if weight_init == "mae":
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(proj.weight.view(proj.out_channels, -1))  # as a linear layer
        nn.init.normal_(model.cls_token, std=0.02)
    if pos_embed == "sincos":
        h, w = model.patch_embed.grid_size
        pe = sincos_pos_embed_2d(h, w, model.embed_dim)
        with torch.no_grad():
            model.pos_embed.copy_(torch.cat([torch.zeros(1, model.embed_dim), pe])[None])
        model.pos_embed.requires_grad_(False)
    if freeze_patch_embed:
        for p in model.patch_embed.parameters():
            p.requires_grad_(False)
    return model


for _name in ARCHS:
    BACKBONES.register(_name)(partial(_vit, _name))


def random_masking(
    tokens: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking (models_mae.py:123-148): ``(kept, mask, ids_restore)``.

    ``tokens`` ``(B, L, D)``; each sample keeps the ``int(L * (1 - mask_ratio))`` tokens of smallest
    ``noise`` (``(B, L)``, uniform by default), in that order: ``kept`` ``(B, keep, D)``. ``mask``
    ``(B, L)`` is 1 on removed tokens and 0 on kept ones, in the original order; ``ids_restore``
    ``(B, L)`` is the inverse of the shuffle: gathering ``[kept, removed]`` with it restores the order.
    """
    n, length, dim = tokens.shape
    keep = int(length * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(n, length, device=tokens.device)
    shuffle = noise.argsort(dim=1)
    ids_restore = shuffle.argsort(dim=1)
    kept = tokens.gather(1, shuffle[:, :keep, None].expand(-1, -1, dim))
    mask = torch.ones(n, length, device=tokens.device)
    mask[:, :keep] = 0
    return kept, mask.gather(1, ids_restore), ids_restore


def forward_masked(
    vit: VisionTransformer, images: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's encoder (models_mae.py:150-170): ``(tokens, mask, ids_restore)``.

    Patch embedding plus position embedding (timm's own ``_pos_embed``: the CLS token with its slot,
    the grid resampled for other input sizes as in the normal forward), then :func:`random_masking` of
    the patch tokens, the CLS token in front, the blocks and the final norm: ``tokens``
    ``(B, 1 + keep, D)``, the CLS token first. Adding the position embedding before or after putting
    the CLS token in front is the same sum, so this is the official order of operations.
    """
    x = vit._pos_embed(vit.patch_embed(images))
    prefix = vit.num_prefix_tokens
    kept, mask, ids_restore = random_masking(x[:, prefix:], mask_ratio, noise)
    x = vit.norm_pre(torch.cat([x[:, :prefix], kept], dim=1))
    return vit.norm(vit.blocks(x)), mask, ids_restore


def forward_mask_token(
    vit: VisionTransformer, images: torch.Tensor, masks: torch.Tensor, mask_token: torch.Tensor
) -> torch.Tensor:
    """iBOT's and DINOv2's masked encoder (dinov2 ``models/vision_transformer.py:214-221``): the patch
    tokens where ``masks`` ``(B, N)`` is True replaced by ``mask_token`` ``(D,)`` before the position
    embedding, then the CLS token and position embedding (timm's ``_pos_embed``), the blocks and the final
    norm: every token ``(B, prefix + N, D)``, the CLS token first. All-False masks give
    ``vit.forward_features(images)``."""
    x = vit.patch_embed(images)  # (B, N, D), or (B, H, W, D) with dynamic_img_size
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    if masks.shape != flat.shape[:2]:
        raise ValueError(f"masks of shape {tuple(masks.shape)} for {flat.shape[1]} patches of {flat.shape[0]} images")
    flat = torch.where(masks.unsqueeze(-1), mask_token.to(flat.dtype).view(1, 1, -1), flat)
    x = vit.norm_pre(vit._pos_embed(flat.view_as(x)))
    return vit.norm(vit.blocks(x))
