"""MoCo v3.

Chen, Xie, He. "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021,
arXiv:2104.02057. Official code: facebookresearch/moco-v3 (``moco/builder.py``, ``vits.py``,
``main_moco.py``).

Follows the official defaults: no queue; each query's candidates are the momentum encoder's keys of
the whole batch gathered from all ranks, the positive being the key of the same image; the loss is
symmetric, ``ctr(q1, k2) + ctr(q2, k1)``, each term scaled by ``2 * T`` as in the official code. The
query side is backbone -> projector -> predictor; the momentum side is backbone -> projector, an EMA
whose momentum rises from 0.99 to 1 by a half-cosine over training. Heads (``_build_mlp`` of the
official code): linear layers without bias, BN + ReLU after hidden layers, a BN without affine
parameters after the last projector layer; the projector has 3 layers for ViT and 2 for ResNet, 4096
hidden and 256 out; the predictor has 2 layers (4096 hidden), with that last BN for ViT and without it
for ResNet. Temperature 0.2 for ViT, 1.0 for ResNet. BN is synchronized across ranks. The defaults
here are the ViT ones (the paper's subject); the ResNet preset sets the rest. The ViT backbone options
(fixed sin-cos position embedding, frozen random patch projection, MoCo initialization) live in
``backbones/vit.py``; AdamW (lr 1.5e-4 x bs/256, wd 0.1, 40 warm-up epochs) or LARS (ResNet: lr 0.6,
wd 1e-6, 10 warm-up epochs) in the presets.

Deviations: the official loop updates the momentum encoder at the start of step ``i`` with the
momentum of step ``i``; here the loop's EMA runs after step ``i`` with that momentum, so the schedule
is shifted by one step. Biases and norm parameters get no weight decay under AdamW (the official ViT
runs decay every parameter).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..losses import info_nce_batch
from ..nn import copy_as_target, mlp
from .base import Method, MethodConfig, Progress, StepOutput, cosine_momentum, register
from .stats import embedding_std


@dataclass
class MoCoV3Config(MethodConfig):
    name: str = "mocov3"
    temperature: float = 0.2  # 1.0 for ResNet
    momentum: float = 0.99  # start of the cosine schedule
    momentum_end: float = 1.0
    proj_layers: int = 3  # 2 for ResNet
    proj_hidden_dim: int = 4096
    proj_out_dim: int = 256
    pred_hidden_dim: int = 4096
    pred_last_bn: bool = True  # False for ResNet
    gather: bool = True  # keys of all ranks as candidates under torch.distributed


@register("mocov3")
class MoCoV3(Method):
    Config = MoCoV3Config
    num_views = 2

    def __init__(self, backbone: nn.Module, cfg: MoCoV3Config) -> None:
        super().__init__(backbone, cfg)
        self.projector = mlp(
            backbone.num_features,
            cfg.proj_hidden_dim,
            cfg.proj_out_dim,
            num_layers=cfg.proj_layers,
            norm="bn",
            last_norm="bn_noaffine",
        )
        self.predictor = mlp(
            cfg.proj_out_dim,
            cfg.pred_hidden_dim,
            cfg.proj_out_dim,
            num_layers=2,
            norm="bn",
            last_norm="bn_noaffine" if cfg.pred_last_bn else "none",
            last_bias=False,
        )
        self.momentum_backbone = copy_as_target(self.backbone)
        self.momentum_projector = copy_as_target(self.projector)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    def ema_momentum(self, progress: Progress) -> float:
        return cosine_momentum(self.cfg.momentum, self.cfg.momentum_end, progress)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        x1, x2 = views
        # one backbone pass per view: BN statistics per view, as in the official code
        q1 = self.predictor(self.projector(self.backbone(x1)))
        q2 = self.predictor(self.projector(self.backbone(x2)))
        with torch.no_grad():
            k1 = self.momentum_projector(self.momentum_backbone(x1))
            k2 = self.momentum_projector(self.momentum_backbone(x2))
        t = self.cfg.temperature
        loss = (info_nce_batch(q1, k2, t, self.cfg.gather) + info_nce_batch(q2, k1, t, self.cfg.gather)) * 2 * t
        return StepOutput(loss, {"z_std": embedding_std(q1)})
