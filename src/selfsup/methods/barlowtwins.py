"""Barlow Twins.

Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021, arXiv:2103.03230. Official code: facebookresearch/barlowtwins (``main.py``).

Follows the official defaults: a 3-layer projector 8192-8192-8192 (BN and ReLU after the two hidden
layers, no bias, no norm on the output), embeddings batch-normalized without affine parameters,
the empirical cross-correlation matrix ``C = BN(z1)^T BN(z2) / N`` over the global batch of ``N``
images, and ``L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`` with lambda 0.0051 (the
official default; the paper rounds it to 5e-3). The official code converts every BN, the embeddings'
included, to SyncBN, so the normalization is over the global batch; here ``sync_bn`` asks the loop
for the same. The optimizer lives in the presets (LARS, wd 1.5e-6 as in the paper (the code's
default is 1e-6), 10 warm-up epochs, cosine to 1/1000 of the peak, batch 2048, 1000 epochs); the
biases and BN parameters (excluded from weight decay and LARS adaptation) get a learning rate
``bias_lr_scale`` = 0.0048 / 0.2 times that of the weights (``--learning-rate-biases``).

Deviation: the partial cross-correlations are summed across ranks with a differentiable all-reduce,
so with DDP's gradient averaging the update equals that of one process holding the whole batch. The
official code's in-place ``all_reduce`` is invisible to autograd, so its gradients are that update
divided by the number of GPUs (which LARS's trust ratio largely absorbs for the weights, but not for
the biases or the balance against weight decay). The cross-correlation is computed in float32 even
under autocast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..losses import barlow_twins_loss, cross_correlation
from ..nn import mlp
from .base import Method, MethodConfig, StepOutput, register, split_decay_groups
from .stats import embedding_std


@dataclass
class BarlowTwinsConfig(MethodConfig):
    name: str = "barlowtwins"
    proj_hidden_dim: int = 8192
    proj_out_dim: int = 8192
    proj_layers: int = 3
    lambd: float = 0.0051  # weight of the redundancy-reduction (off-diagonal) term
    bias_lr_scale: float = 0.024  # lr of biases and BN parameters / lr of weights: 0.0048 / 0.2
    loss_scale: float = 1.0  # multiplies the loss (solo-learn's scale_loss; the first official release had 0.024)


@register("barlowtwins")
class BarlowTwins(Method):
    Config = BarlowTwinsConfig
    num_views = 2

    def __init__(self, backbone: nn.Module, cfg: BarlowTwinsConfig) -> None:
        super().__init__(backbone, cfg)
        self.projector = mlp(
            backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim, num_layers=cfg.proj_layers, last_bias=False
        )
        self.bn = nn.BatchNorm1d(cfg.proj_out_dim, affine=False)

    def param_groups(self) -> list[dict[str, Any]]:
        groups = split_decay_groups(self.named_parameters())
        for g in groups:
            if g.get("lars_exclude"):
                g["lr_scale"] = self.cfg.bias_lr_scale
        return groups

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z1, z2 = (self.projector(self.backbone(v)) for v in views)
        c = cross_correlation(self.bn(z1), self.bn(z2))
        loss = self.cfg.loss_scale * barlow_twins_loss(c, self.cfg.lambd)
        with torch.no_grad():
            on_diag = (1 - torch.diagonal(c)).pow(2).mean()
            off_diag = (c.pow(2).sum() - torch.diagonal(c).pow(2).sum()) / max(1, c.numel() - c.shape[0])
        # z_std on the projector output: after the BN every dimension has unit variance, which hides collapse.
        return StepOutput(loss, {"z_std": embedding_std(z1), "on_diag": on_diag, "off_diag": off_diag})
