"""SimSiam.

Chen, He. "Exploring Simple Siamese Representation Learning", CVPR 2021, arXiv:2011.10566.
Official code: facebookresearch/simsiam (``simsiam/builder.py``, ``main_simsiam.py``).

Follows the official defaults: one encoder shared by both views (backbone and a 3-layer projector
whose width is the backbone's, output 2048, BN after every layer including the output, the output BN
without affine parameters), a 2-layer predictor with a 512 bottleneck (BN and ReLU on the hidden
layer, no BN on the output), and the symmetrized negative cosine
``D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2``; SyncBN under DDP. The optimizer lives in the
presets (SGD, lr 0.05 x bs/256, momentum 0.9, wd 1e-4, cosine decay, no warm-up); the predictor's
learning rate stays at the peak value (``--fix-pred-lr``, Table 1's last row, the README command).
As in the official code, weight decay applies to every parameter, biases and BN included.

Deviations: the cosine schedule is per step rather than per epoch. The output layer of the projector
has no bias (the official code keeps one frozen at its initial value, a no-op under the BN that
follows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..losses import negative_cosine
from ..nn import mlp
from .base import Method, MethodConfig, StepOutput, register, split_decay_groups
from .stats import embedding_std


@dataclass
class SimSiamConfig(MethodConfig):
    name: str = "simsiam"
    proj_hidden_dim: int = 0  # 0: the backbone's width (2048 for ResNet-50), as in the official code
    proj_out_dim: int = 2048
    proj_layers: int = 3  # 2 in the paper's CIFAR setting
    pred_hidden_dim: int = 512
    fix_pred_lr: bool = True  # predictor at the peak learning rate, not decayed


@register("simsiam")
class SimSiam(Method):
    Config = SimSiamConfig
    num_views = 2

    def __init__(self, backbone: nn.Module, cfg: SimSiamConfig) -> None:
        super().__init__(backbone, cfg)
        width = backbone.num_features
        self.projector = mlp(
            width,
            cfg.proj_hidden_dim or width,
            cfg.proj_out_dim,
            num_layers=cfg.proj_layers,
            norm="bn",
            last_norm="bn_noaffine",
        )
        self.predictor = mlp(cfg.proj_out_dim, cfg.pred_hidden_dim, cfg.proj_out_dim, norm="bn")

    exclude_bias_norm = False  # the official SGD decays every parameter, biases and BN included

    def param_groups(self) -> list[dict[str, Any]]:
        predictor = {id(p) for p in self.predictor.parameters()}
        named = list(self.named_parameters())
        encoder = [(n, p) for n, p in named if id(p) not in predictor]
        head = [(n, p) for n, p in named if id(p) in predictor]
        return split_decay_groups(encoder, self.exclude_bias_norm) + split_decay_groups(
            head, self.exclude_bias_norm, fixed_lr=self.cfg.fix_pred_lr
        )

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z1, z2 = (self.projector(self.backbone(v)) for v in views)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2
        return StepOutput(loss, {"z_std": embedding_std(z1)})
