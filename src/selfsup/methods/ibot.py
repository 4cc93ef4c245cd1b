"""iBOT.

Zhou, Wei, Wang, Shen, Xie, Yuille, Kong. "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022,
arXiv:2111.07832. Official code: bytedance/ibot@da316d8 (``main_ibot.py``, ``models/head.py``,
``models/vision_transformer.py``, ``loader.py``).

DINO (see :mod:`selfsup.methods.dino`: teacher EMA, DINO head, centring, temperature warm-up, frozen last
layer) plus masked image modelling with the teacher as online tokenizer. The student sees each global crop
with a block-wise mask (:func:`~selfsup.nn.masking.ibot_masks`: per crop a ratio ``pred_ratio`` +-
``pred_ratio_var``, BEiT blocks of at least ``(min(h, w) // 3) ** 2`` patches; the recipe's ``pred_ratio
[0, 0.3]``, ``pred_ratio_var [0, 0.2]`` leaves half the crops unmasked and masks the others at 10-50%),
its masked patch embeddings replaced by a learned ``mask_token`` (zero-initialized, ``(1, D)`` and so
weight-decayed, as the official ``masked_embed``) before the position embedding; the local crops go
through the student unmasked, their [CLS] only. The teacher sees the global crops unmasked.

The loss (``iBOTLoss``, main_ibot.py:514-572) is ``lambda1`` x DINO's [CLS] loss over (teacher global
``q``, student crop ``v != q``) pairs plus ``lambda2`` x the patch loss of each global crop with itself
(``v == q``): the cross-entropy between the teacher's centred, sharpened patch distributions (its own
center ``center2``, EMA 0.9 of the mean over all patch tokens of every rank, and its own temperature
0.04 -> 0.07 over 30 epochs, shifted by ``pred_start_epoch``) and the student's (temperature 0.1) at the
masked patches, averaged per image over its masked patches, then over every image and crop (an unmasked
image counts 0). The head (``iBOTHead``, models/head.py:145-199) applies the DINO head's MLP to the
[CLS] and patch tokens alike, and a second weight-normalized layer to the patches (``shared_head``: the
same layer; its output size ``patch_out_dim`` otherwise).

Defaults are the official ones (main_ibot.py:36-150); the ViT-S/16 recipe (README.md:62-78) sets
``teacher_temp 0.07``, ``norm_last_layer false``, ``shared_head true``, 10 local crops and the ratios above
in the preset.

Deviations: the student's head runs on the masked patch tokens only (the loss and its gradient are the same:
unmasked patches have weight 0); the teacher's on all of them (the center needs them). Masks are drawn for
the global crops only (the official loader draws them for the local crops too and never uses them), in the
training process from :func:`~selfsup.nn.masking.step_rng` (seed, step, rank), not in the DataLoader
workers from the global ``random`` module, so a resumed run draws the same masks. The official default
``shared_head false`` keeps the teacher's patch layer shared (``shared_head_teacher true``, an EMA of the
student's [CLS] layer); here the teacher mirrors the student. Register tokens, when the backbone has them,
get no loss. DINO's deviations (weight norm, position-embedding resampling) apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import dino_loss, masked_patch_weights, patch_distillation_loss
from ..nn.masking import ibot_masks
from .base import Progress, StepOutput, register
from .dino import DINOConfig, DINOHead, MaskedDINO, last_layer, teacher_temperature, updated_center
from .stats import embedding_std


@dataclass
class IBOTConfig(DINOConfig):
    name: str = "ibot"
    out_dim: int = 8192
    patch_out_dim: int = 8192  # the patch layer's outputs when it is not shared
    shared_head: bool = False  # one output layer for [CLS] and patches (the ViT-S/16 recipe: true)
    teacher_temp: float = 0.04  # the ViT-S/16 recipe: 0.07
    warmup_teacher_temp_epochs: int = 30
    warmup_teacher_patch_temp: float = 0.04
    teacher_patch_temp: float = 0.07
    center_momentum2: float = 0.9
    lambda1: float = 1.0  # [CLS] loss weight
    lambda2: float = 1.0  # patch loss weight
    pred_ratio: list[float] = field(default_factory=lambda: [0.3])  # masked share, per candidate
    pred_ratio_var: list[float] = field(default_factory=lambda: [0.0])  # +- around each candidate
    pred_shape: str = "block"  # block (BEiT) or rand
    pred_start_epoch: int = 0  # no masking (and the patch temperature at its warm-up value) before


def patch_temperature(epoch: int, cfg: IBOTConfig) -> float:
    """The patch temperature schedule (main_ibot.py:503-512): held at the warm-up value for
    ``pred_start_epoch`` epochs, then DINO's warm-up."""
    e = max(0, epoch - cfg.pred_start_epoch)
    return teacher_temperature(e, cfg.warmup_teacher_patch_temp, cfg.teacher_patch_temp, cfg.warmup_teacher_temp_epochs)


class IBOTHead(DINOHead):
    """DINO's head plus ``last_layer2`` for the patch tokens (``iBOTHead``); ``shared``: the same layer."""

    def __init__(self, in_dim: int, cfg: IBOTConfig) -> None:
        super().__init__(in_dim, cfg)
        self.shared = cfg.shared_head
        if not self.shared:
            self.last_layer2 = last_layer(cfg.bottleneck_dim, cfg.patch_out_dim, cfg.norm_last_layer)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens ``(..., D)`` -> patch logits."""
        z = self.bottleneck(x)
        return self.last_layer(z) if self.shared else self.last_layer2(z)


@register("ibot")
class IBOT(MaskedDINO):
    Config = IBOTConfig

    def __init__(self, backbone: nn.Module, cfg: IBOTConfig) -> None:
        super().__init__(backbone, cfg, cfg.out_dim if cfg.shared_head else cfg.patch_out_dim)
        self._patch_temp = patch_temperature(0, cfg)
        self._epoch = 0

    def build_heads(self, in_dim: int) -> None:
        self.head = IBOTHead(in_dim, self.cfg)

    def on_step(self, progress: Progress) -> None:
        super().on_step(progress)
        self._epoch = int(progress.epoch)
        self._patch_temp = patch_temperature(self._epoch, self.cfg)

    def draw_masks(self, batch: int, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """``(batch, h * w)`` masks for one global crop of each image (none before ``pred_start_epoch``)."""
        c = self.cfg
        if self._epoch < c.pred_start_epoch:
            return torch.zeros(batch, grid[0] * grid[1], dtype=torch.bool, device=device)
        return ibot_masks(batch, grid, self._rng, c.pred_ratio, c.pred_ratio_var, c.pred_shape).to(device)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        c, g = self.cfg, self.cfg.num_global_views
        n, grid, glob = self.global_crops(views)
        masks = torch.cat([self.draw_masks(n, grid, glob.device) for _ in range(g)])  # (g * n, N), crop-major
        tokens, cls = self.student_tokens(views, glob, masks)
        prefix = self.backbone.num_prefix_tokens
        z = self.head.bottleneck(cls)
        student = self.head.last_layer(z)
        student_patch = self.head.patches(tokens[:, prefix:][masks])  # (M, K): the masked patches only
        with torch.no_grad():
            t_tokens = self.teacher_backbone.forward_features(glob)
            teacher = self.teacher_head(t_tokens[:, 0])
            teacher_patch = self.teacher_head.patches(t_tokens[:, prefix:]).flatten(0, 1)  # (g * n * N, K)
            masked = teacher_patch.view(g * n, -1, teacher_patch.shape[-1])[masks]  # the targets: masked only
            probs = F.softmax((masked.float() - self.center2) / self._patch_temp, dim=-1)
        cls_loss = dino_loss(
            list(student.split(n)), list(teacher.split(n)), self.center, self._teacher_temp, c.student_temp
        )
        patch_loss = patch_distillation_loss(student_patch, probs, masked_patch_weights(masks), c.student_temp)
        loss = c.lambda1 * cls_loss + c.lambda2 * patch_loss
        if self.training:
            self.center.copy_(updated_center(self.center, teacher, c.center_momentum))
            self.center2.copy_(updated_center(self.center2, teacher_patch, c.center_momentum2))
        logs = {
            "z_std": embedding_std(z[:n]),
            "cls_loss": cls_loss.detach(),
            "patch_loss": patch_loss.detach(),
            "mask_ratio": masks.float().mean(),
            "teacher_temp": torch.tensor(self._teacher_temp, device=loss.device),
        }
        return StepOutput(loss, logs)
