"""DINOv2.

Oquab, Darcet, Moutakanni, Vo, Szafraniec, Khalidov, Fernandez, Haziza, Massa, El-Nouby, Assran, Ballas,
Galuba, Howes, Huang, Li, Misra, Rabbat, Sharma, Synnaeve, Xu, Jégou, Mairal, Labatut, Joulin, Bojanowski.
"DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024, arXiv:2304.07193. Official code:
facebookresearch/dinov2@b8931f7 (``dinov2/train/ssl_meta_arch.py``, ``dinov2/loss/*.py``,
``dinov2/layers/dino_head.py``, ``dinov2/utils/param_groups.py``, ``dinov2/data/collate.py``,
``dinov2/configs/ssl_default_config.yaml``).

The teacher (EMA of the student: momentum 0.992 -> 1 by a cosine) sees the two global crops unmasked; the
student sees them with DINOv2's block masks (:func:`~selfsup.nn.masking.batch_block_masks`: half of the
``2B`` global crops masked, the ``i``-th at a ratio in the ``i``-th bin of ``[0.1, 0.5]``, blocks of at least
4 patches, at most half the grid per block), the masked patch embeddings replaced by a learned mask token
before the position embedding, and the local crops unmasked. Three losses (ssl_meta_arch.py:278-342):

- DINO's on the [CLS] token: the cross-entropy between the teacher's targets of one global crop and the
  student's softmax (temperature 0.1) of every other crop (local crops against both global ones, each
  global crop against the other), summed and divided by ``2 + max(2 L, 1)`` (the mean over pairs when
  there are ``L >= 1`` local crops, as in the recipes);
- iBOT's on the masked patches (:func:`~selfsup.losses.patch_distillation_loss`), averaged per image over its
  masked patches, then over all ``2B`` global crops; through the DINO head's layers (``ibot_separate_head``:
  a head of its own, ``ibot_out_dim`` outputs);
- KoLeo (weight 0.1, :func:`~selfsup.losses.koleo_loss`) on the student's backbone [CLS] features of each
  global crop apart.

The teacher's targets are ``softmax((t - center) / T)`` with DINO's center (EMA 0.9 of the all-reduced mean
logits; for the patches, of each rank's mean over its masked patches), or with ``centering:
sinkhorn_knopp`` three Sinkhorn-Knopp iterations over the global batch (the paper's choice, sec. 4 and
vitl14.yaml; :func:`~selfsup.nn.sinkhorn.sinkhorn`, the same iterations as the official
``sinkhorn_knopp_teacher``). The teacher temperature rises linearly per step from 0.04 to 0.07 over the first
30 epochs (the official ``CosineScheduler`` with only a warm-up), the same for both losses. The head (3
layers, 2048 hidden, GELU, 256 bottleneck, l2-normalized, weight-normalized last layer of 65,536 outputs with
its norm trained) is DINO's; its last layers get no update during the first epoch. Parameter groups
(:func:`~selfsup.methods.base.layer_decay_groups`): layer-wise lr decay 0.9 over the ViT blocks, the patch
embedding's rate x 0.2, no weight decay on biases, norms and LayerScale gains. Gradients are clipped to 3.0
per module (backbone with the mask token, each head: ``optim.clip_mode: per_module``). LayerScale (1e-5),
uniform stochastic depth and register tokens are backbone options (:mod:`selfsup.backbones.vit`).

Deviations: KoLeo's neighbours come from the whole batch over every rank (``koleo_per_rank: true`` gives the
official per-rank search), so the loss does not depend on the number of ranks. The last layers are frozen by
dropping their gradients (their Adam moments stay at zero) where the official schedule sets their lr to 0.
Masks are drawn in the training process from :func:`~selfsup.nn.masking.step_rng` (seed, step, rank), not in
the DataLoader workers. The official "epoch" is 1,250 iterations whatever the dataset: the presets give the
schedules in passes over the data. xFormers' fused attention and the padded buffers of masked tokens
(``upperbound``) are not used: the same values, computed without them. Position embeddings are resampled by
timm (bicubic), without the official 0.1 offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import cross_view_loss, koleo_loss, masked_patch_weights, patch_distillation_loss
from ..nn.masking import BlockMasking, batch_block_masks
from ..nn.sinkhorn import sinkhorn
from .base import Progress, StepOutput, layer_decay_groups, register
from .dino import DINOConfig, DINOHead, MaskedDINO, updated_center
from .stats import embedding_std


@dataclass
class DINOv2Config(DINOConfig):
    name: str = "dinov2"
    norm_last_layer: bool = False  # the official last layer's norm g trains
    momentum: float = 0.992
    teacher_temp: float = 0.07
    warmup_teacher_temp_epochs: int = 30
    centering: str = "centering"  # or sinkhorn_knopp (vitl14.yaml, the paper)
    sinkhorn_iterations: int = 3
    dino_loss_weight: float = 1.0
    ibot_loss_weight: float = 1.0
    koleo_loss_weight: float = 0.1
    koleo_per_rank: bool = False  # the official per-rank neighbour search (selfsup: the whole batch)
    ibot_separate_head: bool = False
    ibot_out_dim: int = 65536  # the separate iBOT head's outputs
    mask_probability: float = 0.5  # share of the global crops that are masked
    mask_ratio_min_max: list[float] = field(default_factory=lambda: [0.1, 0.5])
    layer_decay: float = 0.9  # layer-wise lr decay over the ViT blocks
    patch_embed_lr_mult: float = 0.2


def warmup_temperature(step: int, steps_per_epoch: int, cfg: DINOv2Config) -> float:
    """DINOv2's teacher temperature (train.py:84-90): ``linspace(warmup, temp, W)[step]`` for the first ``W =
    warmup_teacher_temp_epochs`` epochs' steps, then ``temp``."""
    w = cfg.warmup_teacher_temp_epochs * steps_per_epoch
    if step >= w:
        return cfg.teacher_temp
    if w == 1:
        return cfg.warmup_teacher_temp
    return cfg.warmup_teacher_temp + (cfg.teacher_temp - cfg.warmup_teacher_temp) * step / (w - 1)


@register("dinov2")
class DINOv2(MaskedDINO):
    Config = DINOv2Config

    def __init__(self, backbone: nn.Module, cfg: DINOv2Config) -> None:
        if cfg.centering not in ("centering", "sinkhorn_knopp"):
            raise ValueError(f"method.centering: {cfg.centering!r} is not 'centering' or 'sinkhorn_knopp'")
        self.extra_heads = ("ibot_head",) if cfg.ibot_separate_head else ()
        super().__init__(backbone, cfg, cfg.ibot_out_dim if cfg.ibot_separate_head else cfg.out_dim)
        self._teacher_temp = warmup_temperature(0, 1, cfg)
        self._maskers: dict[tuple[int, int], BlockMasking] = {}

    def build_heads(self, in_dim: int) -> None:
        self.head = DINOHead(in_dim, self.cfg)
        if self.cfg.ibot_separate_head:
            self.ibot_head = DINOHead(in_dim, self.cfg, out_dim=self.cfg.ibot_out_dim)

    def param_groups(self) -> list[dict[str, Any]]:
        return layer_decay_groups(self, self.cfg.layer_decay, self.cfg.patch_embed_lr_mult, layer0=("mask_token",))

    def clip_groups(self) -> list[list[nn.Parameter]]:
        heads = [self.head, *(getattr(self, n) for n in self.extra_heads)]
        return [[*self.backbone.parameters(), self.mask_token], *[list(h.parameters()) for h in heads]]

    def on_step(self, progress: Progress) -> None:
        super().on_step(progress)  # the masks' generator
        self._teacher_temp = warmup_temperature(progress.step, progress.steps_per_epoch, self.cfg)

    def draw_masks(self, batch: int, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """``(batch, h * w)`` masks of the ``batch`` global crops (DINOv2's collate)."""
        if grid not in self._maskers:  # train.py:170-173: at most half the patches in one block
            self._maskers[grid] = BlockMasking(grid, max_num_patches=0.5 * grid[0] * grid[1])
        lo, hi = self.cfg.mask_ratio_min_max
        return batch_block_masks(batch, self._maskers[grid], self._rng, (lo, hi), self.cfg.mask_probability).to(device)

    def _targets(self, logits: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        if self.cfg.centering == "sinkhorn_knopp":
            return sinkhorn(logits, self._teacher_temp, self.cfg.sinkhorn_iterations)
        return F.softmax((logits.float() - center) / self._teacher_temp, dim=-1)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        c, g = self.cfg, self.cfg.num_global_views
        n, grid, glob = self.global_crops(views)
        masks = self.draw_masks(g * n, grid, glob.device)  # (g * n, N): the global crops, crop-major
        tokens, cls = self.student_tokens(views, glob, masks)  # masked global crops, unmasked local ones
        cls_global, prefix = tokens[:, 0], self.backbone.num_prefix_tokens
        patch_head = self.ibot_head if c.ibot_separate_head else self.head
        z = self.head.bottleneck(cls)
        student = self.head.last_layer(z)
        student_patch = patch_head(tokens[:, prefix:][masks])  # (M, K)
        with torch.no_grad():  # teacher: the unmasked global crops
            t_tokens = self.teacher_backbone.forward_features(glob)
            teacher = self.teacher_head(t_tokens[:, 0])
            t_patch_head = self.teacher_ibot_head if c.ibot_separate_head else self.teacher_head
            teacher_patch = t_patch_head(t_tokens[:, prefix:][masks])
            targets = self._targets(teacher, self.center)
            patch_targets = self._targets(teacher_patch, self.center2)
        local_views = len(views) - g
        pairs = g * len(views) - g
        dino = cross_view_loss(list(student.split(n)), list(targets.split(n)), c.student_temp)
        dino = dino * pairs / ((g - 1) * g + max(local_views * g, 1))  # ssl_meta_arch.py:149-150, 284, 295
        ibot = patch_distillation_loss(student_patch, patch_targets, masked_patch_weights(masks), c.student_temp)
        koleo = sum(koleo_loss(x, gather=not c.koleo_per_rank) for x in cls_global.split(n))
        loss = c.dino_loss_weight * dino + c.ibot_loss_weight * ibot + c.koleo_loss_weight * koleo
        if self.training and c.centering == "centering":
            self.center.copy_(updated_center(self.center, teacher, c.center_momentum))
            patch_mean = teacher_patch.float().sum(dim=0, keepdim=True) / max(1, len(teacher_patch))
            self.center2.copy_(updated_center(self.center2, patch_mean, c.center_momentum))
        logs = {
            "z_std": embedding_std(z[:n]),
            "dino_loss": dino.detach(),
            "ibot_loss": ibot.detach(),
            "koleo_loss": koleo.detach(),
            "mask_ratio": masks.float().mean(),
            "teacher_temp": torch.tensor(self._teacher_temp, device=loss.device),
        }
        return StepOutput(loss, logs)
