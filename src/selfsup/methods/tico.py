"""TiCo.

Zhu, Moraes, Karakulak, Sobol, Canziani, LeCun. "TiCo: Transformation Invariance and Covariance Contrast
for Self-Supervised Visual Representation Learning", 2022, arXiv:2206.10698. No official code was
released; the implementation compared with is lightly's (lightly-ai/lightly@e8d317f
``lightly/loss/tico_loss.py:119-141``, ``benchmarks/imagenet/resnet50/tico.py``), after
sayannag/TiCo-pytorch@2259b83 (``TiCo/main.py:41-78``, unofficial).

The loss: ``1 - mean_i <z'_i, z''_i> + rho mean_i z'_i^T C_t z'_i`` on l2-normalized embeddings, with the
running matrix ``C_t = beta C_{t-1} + (1 - beta) mean_i z'_i z'_i^T`` (no gradient through it), beta 0.9
and rho 8 (lightly ``tico_loss.py:21-26`` citing the paper; sayannag ``main.py:88``: "Recommended value in
the paper = 8.0"). As in BYOL, which TiCo builds on, ``z'`` comes from the online network (backbone and
projector 4096 -> 256 with BN and ReLU after the hidden layer, a bias on the output layer:
lightly's ``TiCoProjectionHead``, sayannag ``main.py:46-47``) and ``z''`` from a momentum encoder, an EMA
of the online backbone and projector with tau rising from 0.99 to 1 by a cosine over training
(lightly's benchmark ``tico.py:50-57``); there is no predictor. One direction, as both references:
view 1 through the online network, view 2 through the momentum encoder. The evaluated encoder is the
online backbone. The optimizer (LARS lr 0.2 x bs/256, wd 1.5e-6, 10 warm-up epochs; BYOL's views) lives
in the presets.

``C`` is a buffer (``cov``): in the state dict, so a resumed run continues with it, and updated only in
training mode. Under DDP it is updated from the global batch (the ranks' ``z'^T z'`` summed), so it is
the same on every rank and equals one process's with the whole batch; lightly gathers the embeddings
for it too (``tico_loss.py:113-117``). Logs: ``z_std``, ``invariance`` and ``contrast`` (the two terms).

Deviations: the paper's invariance term is ``-mean <z', z''>``; the loss here, as lightly's, adds 1 (a
constant: the same gradient). lightly keeps ``C`` as a plain attribute (not saved with the model,
created on the first call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from ..losses import tico_loss
from ..nn import copy_as_target, mlp
from .base import Method, MethodConfig, Progress, StepOutput, cosine_momentum, register
from .stats import embedding_std


@dataclass
class TiCoConfig(MethodConfig):
    name: str = "tico"
    proj_hidden_dim: int = 4096
    proj_out_dim: int = 256
    beta: float = 0.9  # momentum of the running matrix C
    rho: float = 8.0  # weight of the covariance contrast term
    momentum: float = 0.99  # base EMA rate tau of the momentum encoder
    momentum_end: float = 1.0  # tau reached at the end of training (cosine schedule)
    gather: bool = True  # C's update from the embeddings of all ranks under torch.distributed


@register("tico")
class TiCo(Method):
    Config = TiCoConfig
    num_views = 2

    cfg: TiCoConfig
    cov: torch.Tensor

    def __init__(self, backbone: nn.Module, cfg: TiCoConfig) -> None:
        super().__init__(backbone, cfg)
        self.projector = mlp(cast(int, backbone.num_features), cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.target_backbone = copy_as_target(backbone)
        self.target_projector = copy_as_target(self.projector)
        self.register_buffer("cov", torch.zeros(cfg.proj_out_dim, cfg.proj_out_dim))

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]

    def ema_momentum(self, progress: Progress) -> float:
        return cosine_momentum(self.cfg.momentum, self.cfg.momentum_end, progress)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z = self.projector(self.backbone(views[0]))
        with torch.no_grad():
            t = self.target_projector(self.target_backbone(views[1]))
        out = tico_loss(z, t, self.cov, self.cfg.beta, self.cfg.rho, gather=self.cfg.gather)
        if self.training:
            self.cov.copy_(out.cov)
        logs = {"z_std": embedding_std(z), "invariance": out.invariance, "contrast": out.contrast}
        return StepOutput(out.loss, logs)
