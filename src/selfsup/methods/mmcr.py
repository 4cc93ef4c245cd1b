"""MMCR.

Yerxa, Kuang, Simoncelli, Chung. "Learning Efficient Coding of Natural Images with Maximum Manifold
Capacity Representations", NeurIPS 2023, arXiv:2303.03307. Official code: ThomasYerxa/mmcr@fafd3a9.

Follows the official ImageNet defaults (``pretrain_imagenet.py:8-25``, ``mmcr/imagenet/train.py:106-133``):
a ResNet-50 (``zero_init_residual=True``, ``models.py:27``) and a projector 8192-8192-512 with BN and ReLU
after the hidden layers and no bias in any layer (``models.py:21-40``); ``k`` views of each image (2 by
default, any number here: ``data.views`` counts), l2-normalized; the loss ``-||C||_* + lambd mean_i
||Z_i||_*``, ``C`` the matrix of the images' centroids over the global batch (all-gathered,
``loss_mmcr_momentum.py:29-52``), lambd 0 (the local nuclear norms skipped); a momentum encoder (the
``MMCR_Momentum`` objective, the default) run on the same views, whose centroids are averaged with the
online ones (``:59``), an EMA with a constant tau 0.99 after every step (``misc.py:7-34``); synchronized
BN (``train.py:110-112``); every view in one backbone pass (one BN batch, as the official
``(B N) C H W`` batch). The CIFAR setting (``mmcr/cifar_stl/``) has no momentum encoder
(``momentum_encoder: false``). The optimizer (LARS lr 0.6 x bs/256, wd 1e-6, biases and norms excluded,
10 warm-up epochs, cosine to 1/1000; Adam for CIFAR) lives in the presets.

Gradient scale: the official all-gather is not differentiable and each rank puts its own embeddings
back into the gathered list (``loss_mmcr_momentum.py:35-36``), so each rank back-propagates the global
loss into its own share only, and DDP's average makes the gradient the one-process gradient divided by
the number of GPUs (16 in the default 4 nodes x 4 GPUs run). selfsup's gather is differentiable (the
one-process gradient on any number of processes), so ``loss_scale`` = 1/16 in the ImageNet preset gives
the official update (as Barlow Twins' preset does for the same reason): under LARS the weights' steps
are trust-normalized, but weight decay's weight against the gradient and the biases' and BN's steps
follow the gradient's scale.

Deviations: the official momentum loss drops centroids with non-finite entries (``:61-63``); here a
non-finite loss stops training instead (the loop's check). The momentum encoder's BN running statistics
are copied from the online network (only evaluation uses them, and it uses the online backbone). Logs:
``z_std`` (first view), ``global_nuc`` (``||C||_*``) and, with lambd > 0, ``local_nuc`` (the mean
``||Z_i||_*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from ..losses import mmcr_loss
from ..nn import copy_as_target, mlp
from ..nn.multicrop import multicrop_forward
from .base import Method, MethodConfig, Progress, StepOutput, register
from .stats import embedding_std


@dataclass
class MMCRConfig(MethodConfig):
    name: str = "mmcr"
    proj_hidden_dim: int = 8192
    proj_out_dim: int = 512
    proj_layers: int = 3
    lambd: float = 0.0  # weight of the mean local nuclear norm
    momentum_encoder: bool = True  # the official ImageNet objective MMCR_Momentum; CIFAR has none
    momentum: float = 0.99  # constant EMA rate of the momentum encoder (official --tau)
    loss_scale: float = 1.0  # multiplies the loss (1/16: the official 16-GPU gradient, see the docstring)
    gather: bool = True  # centroids of every rank's images in C under torch.distributed


def _per_image(z: torch.Tensor, k: int) -> torch.Tensor:
    """``(k n, d)`` in view order -> ``(n, k, d)``."""
    return z.reshape(k, -1, z.shape[-1]).transpose(0, 1)


@register("mmcr")
class MMCR(Method):
    Config = MMCRConfig
    cfg: MMCRConfig

    def __init__(self, backbone: nn.Module, cfg: MMCRConfig) -> None:
        super().__init__(backbone, cfg)
        self.projector = mlp(
            cast(int, backbone.num_features),
            cfg.proj_hidden_dim,
            cfg.proj_out_dim,
            num_layers=cfg.proj_layers,
            last_bias=False,
        )
        if cfg.momentum_encoder:
            self.target_backbone = copy_as_target(backbone)
            self.target_projector = copy_as_target(self.projector)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        if not self.cfg.momentum_encoder:
            return []
        return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]

    def ema_momentum(self, progress: Progress) -> float:
        return self.cfg.momentum

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        k = len(views)
        if k < 2:
            raise ValueError(f"MMCR needs at least 2 views of each image, got {k}")
        z = _per_image(self.projector(multicrop_forward(self.backbone, views)), k)
        target = None
        if self.cfg.momentum_encoder:
            with torch.no_grad():
                target = _per_image(self.target_projector(multicrop_forward(self.target_backbone, views)), k)
        out = mmcr_loss(z, target, self.cfg.lambd, gather=self.cfg.gather)
        logs = {"z_std": embedding_std(z[:, 0]), "global_nuc": out.global_nuc}
        if self.cfg.lambd != 0:
            logs["local_nuc"] = out.local_nuc
        return StepOutput(self.cfg.loss_scale * out.loss, logs)
