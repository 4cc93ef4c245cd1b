"""MAE.

He, Chen, Xie, Li, Dollár, Girshick. "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022,
arXiv:2111.06377. Official code: facebookresearch/mae (``models_mae.py``, ``main_pretrain.py``,
``util/pos_embed.py``, ``PRETRAIN.md``).

One view per image. The ViT encoder (the backbone, evaluated and exported as such) sees only a random
25% of the patches (:func:`~selfsup.backbones.vit.forward_masked`: position embedding added before the
per-sample masking, the CLS token put in front after it). A light decoder (``forward_decoder``,
models_mae.py:172-196) embeds the encoder's tokens to ``decoder_embed_dim``, fills the removed places with
one learned mask token, restores the patch order, adds a fixed 2-D sin-cos position embedding, runs
``decoder_depth`` transformer blocks and a LayerNorm, and predicts the ``p * p * 3`` pixels of every patch.
The loss (``forward_loss``, models_mae.py:198-214) is the mean squared error over the removed patches only;
with ``norm_pix_loss`` each target patch is normalized by its own mean and (unbiased) variance, eps 1e-6.
Defaults are the official ViT-B/L ones (models_mae.py:223-236): mask ratio 0.75 (main_pretrain.py:53),
decoder 512 wide, 8 blocks, 16 heads, MLP ratio 4, LayerNorm eps 1e-6. ``norm_pix_loss`` is True here: the
official flag defaults to False (main_pretrain.py:56-58), but the pretraining recipe sets it (PRETRAIN.md:11,
:20, "for better representation learning"); False gives the plain-pixel baseline.

Targets are the patches of the view as the encoder receives it: normalized with the dataset's mean and std
(``data.mean``, ``data.std``), as the official code feeds (and reconstructs) ImageNet-normalized images
(main_pretrain.py:123-127, models_mae.py:204).

Parameter groups: the base class's, which are the official ones: timm 0.3.2's ``add_weight_decay``
(main_pretrain.py:179; timm@6504a42 timm/optim/optim_factory.py:25-37) takes 1-D parameters and biases out
of weight decay, is called with no skip list, so the CLS and mask tokens ``(1, 1, D)`` are decayed, and the
fixed position embeddings are not trained at all.

Deviations: the decoder position embedding is a non-persistent buffer (the official frozen parameter holds
the same values) and is recomputed for inputs whose grid differs from ``backbone.img_size``'s. The encoder's
fixed sin-cos embedding is the backbone's (MoCo v3's channel order: row then column); the official
``get_2d_sincos_pos_embed`` puts the column first (util/pos_embed.py:28-45). The two differ by swapping the
two halves of the channels, a fixed permutation that the encoder's layers absorb (every initialization and
AdamW are per-entry, so training is the same in distribution, up to that relabelling of feature channels);
the decoder here uses the official order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from ..backbones.vit import forward_masked, sincos_pos_embed_2d
from ..precision import fp32
from .base import Method, MethodConfig, StepOutput, register


@dataclass
class MAEConfig(MethodConfig):
    name: str = "mae"
    mask_ratio: float = 0.75  # removed share of the patches
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    norm_pix_loss: bool = True  # the official flag's default is False; its pretraining recipe sets it


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, H/p * W/p, p * p * 3)``: patches in row-major order, each flattened
    as (row in the patch, column in the patch, channel), the official layout (models_mae.py:95-107)."""
    n, c, h, w = images.shape
    if h != w or h % patch:
        raise ValueError(f"MAE needs square images whose side is a multiple of the patch {patch}, got {h} x {w}")
    x = images.reshape(n, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // patch) * (w // patch), patch * patch * c)


@fp32
def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """Mean over removed patches of the per-patch mean squared error (models_mae.py:198-214).

    ``pred`` and ``target`` ``(B, L, p * p * 3)``, ``mask`` ``(B, L)`` (1: removed). With ``norm_pix``
    each target patch is standardized by its mean and unbiased variance (``Tensor.var``), eps 1e-6.
    """
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


def mae_sincos_pos_embed(grid: int, dim: int) -> torch.Tensor:
    """``(1 + grid**2, dim)``: the official ``get_2d_sincos_pos_embed(dim, grid, cls_token=True)``
    (util/pos_embed.py:20-67): a zero row for the CLS token, then per patch sin and cos of its column,
    then of its row, at frequencies ``10000 ** (-i / (dim / 4))``: MoCo v3's halves swapped."""
    pe = sincos_pos_embed_2d(grid, grid, dim)  # [sin, cos of the row | sin, cos of the column]
    pe = torch.cat([pe[:, dim // 2 :], pe[:, : dim // 2]], dim=1)
    return torch.cat([torch.zeros(1, dim), pe])


@register("mae")
class MAE(Method):
    Config = MAEConfig
    num_views = 1

    def __init__(self, backbone: nn.Module, cfg: MAEConfig) -> None:
        if not isinstance(backbone, VisionTransformer) or backbone.num_prefix_tokens != 1:
            raise ValueError(
                f"MAE needs a ViT backbone with a CLS token (backbone.name=vit_...), got {type(backbone).__name__}"
            )
        super().__init__(backbone, cfg)
        dim, dec = backbone.embed_dim, cfg.decoder_embed_dim
        self.patch = backbone.patch_embed.patch_size[0]
        grid = backbone.patch_embed.grid_size[0]  # square grids (patchify checks the inputs)
        self.decoder_embed = nn.Linear(dim, dec)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec))
        self.decoder_blocks = nn.Sequential(
            *[
                Block(dec, cfg.decoder_num_heads, 4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
                for _ in range(cfg.decoder_depth)
            ]
        )
        self.decoder_norm = nn.LayerNorm(dec, eps=1e-6)
        self.decoder_pred = nn.Linear(dec, self.patch**2 * 3)
        self.register_buffer("decoder_pos_embed", mae_sincos_pos_embed(grid, dec)[None], persistent=False)
        # models_mae.py:79-93: xavier-uniform linear layers, zero biases, LayerNorms at 1 and 0
        for m in [self.decoder_embed, *self.decoder_blocks.modules(), self.decoder_pred]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def _pos_embed(self, grid: int) -> torch.Tensor:
        if self.decoder_pos_embed.shape[1] == 1 + grid * grid:
            return self.decoder_pos_embed
        return mae_sincos_pos_embed(grid, self.cfg.decoder_embed_dim)[None].to(self.decoder_pos_embed)

    def decode(self, tokens: torch.Tensor, ids_restore: torch.Tensor, grid: int) -> torch.Tensor:
        """Encoder tokens ``(B, 1 + keep, D)`` -> predicted pixels ``(B, L, p * p * 3)`` of every patch."""
        x = self.decoder_embed(tokens)
        n, length = ids_restore.shape
        visible = x[:, 1:]
        filled = torch.cat([visible, self.mask_token.expand(n, length - visible.shape[1], -1).to(x.dtype)], dim=1)
        filled = filled.gather(1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))  # the patch order
        x = torch.cat([x[:, :1], filled], dim=1) + self._pos_embed(grid)
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x)[:, 1:]

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        (images,) = views
        target = patchify(images, self.patch)
        tokens, mask, ids_restore = forward_masked(self.backbone, images, self.cfg.mask_ratio)
        pred = self.decode(tokens, ids_restore, images.shape[-1] // self.patch)
        loss = mae_loss(pred, target, mask, self.cfg.norm_pix_loss)
        return StepOutput(loss, {"mask_ratio": mask.mean()})
