"""BYOL.

Grill, Strub, Altché, Tallec, Richemond, Buchatskaya, Doersch, Pires, Guo, Azar, Piot, Kavukcuoglu,
Munos, Valko. "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS 2020,
arXiv:2006.07733. Official code: deepmind/deepmind-research, ``byol/``.

Follows the official defaults (``byol/configs/byol.py``, the 1000-epoch preset): an online network
(backbone, projector 4096 -> 256 with BN, predictor 4096 -> 256) and a target network (backbone,
projector) that is an exponential moving average of the online one, with ``tau`` rising from 0.996
to 1 by a cosine over training; the symmetrized loss ``2 - 2 cos(q(z1), z'2) + 2 - 2 cos(q(z2), z'1)``
averaged over the batch; cross-replica (synchronized) BatchNorm; BN in training mode in the target
network too. Each view goes through the networks separately, so BN statistics are per view as in the
official code. The evaluated encoder is the online backbone. The optimizer (LARS, lr 0.2 x bs/256,
wd 1.5e-6, biases and BN excluded from both, 10 warm-up epochs then cosine to 0, batch 4096,
1000 epochs) and the asymmetric views (blur p=1.0 / 0.1, solarization p=0 / 0.2) live in the
presets. The official 300-epoch preset uses lr 0.3, wd 1e-6 and ``tau`` 0.99.

The output layers of the projector and predictor have no bias, as Haiku's ``with_bias=False``
(``byol/utils/networks.py``). Deviations: the hidden linear layers of the heads have no bias (a
no-op before BN; the official Haiku layers keep one). The target's BN running statistics are copied
from the online network rather than averaged (they only matter for evaluation, which uses the
online backbone).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..losses import normalized_mse
from ..nn import copy_as_target, mlp
from .base import Method, MethodConfig, Progress, StepOutput, cosine_momentum, register
from .stats import embedding_std


@dataclass
class BYOLConfig(MethodConfig):
    name: str = "byol"
    proj_hidden_dim: int = 4096
    proj_out_dim: int = 256
    pred_hidden_dim: int = 4096
    momentum: float = 0.996  # base EMA rate tau of the target network (0.99 for 300 epochs)
    momentum_end: float = 1.0  # tau reached at the end of training (cosine schedule)


@register("byol")
class BYOL(Method):
    Config = BYOLConfig
    num_views = 2

    def __init__(self, backbone: nn.Module, cfg: BYOLConfig) -> None:
        super().__init__(backbone, cfg)
        self.projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim, last_bias=False)
        self.predictor = mlp(cfg.proj_out_dim, cfg.pred_hidden_dim, cfg.proj_out_dim, last_bias=False)
        self.target_backbone = copy_as_target(backbone)
        self.target_projector = copy_as_target(self.projector)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]

    def ema_momentum(self, progress: Progress) -> float:
        return cosine_momentum(self.cfg.momentum, self.cfg.momentum_end, progress)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z = [self.projector(self.backbone(v)) for v in views]
        p = [self.predictor(zi) for zi in z]
        with torch.no_grad():
            t = [self.target_projector(self.target_backbone(v)) for v in views]
        loss = normalized_mse(p[0], t[1]) + normalized_mse(p[1], t[0])
        return StepOutput(loss, {"z_std": embedding_std(z[0])})
