"""SimCLR v1.

Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, arXiv:2002.05709. Official code: google-research/simclr.

Follows the official defaults: a 2-layer projection head (hidden = backbone width, output 128, BN
after each layer; the output BN has a scale and no shift, ``center=False`` in ``projection_head`` of
the official code: a shift would move every embedding's direction before the l2 normalization),
NT-Xent with temperature 0.1 (0.5 for CIFAR) over 2N-2 negatives gathered from all replicas, and
global (synchronized) BatchNorm. The loss is the official one, ``loss_a + loss_b`` (``objective.py``):
the sum of the two directions' means, twice eq. (1)'s mean over the 2N anchors. The paper's learning
rate and weight decay were tuned at that scale: under LARS, halving the loss would halve the steps
of the BN and bias parameters (not trust-scaled) and double weight decay relative to the gradient.
The optimizer (LARS, lr 0.3 x bs/256, wd 1e-6, 10 warm-up epochs, cosine) lives in the presets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..losses import nt_xent
from ..nn import mlp, projection_head_layers
from .base import Method, MethodConfig, StepOutput, register
from .stats import embedding_std


@dataclass
class SimCLRConfig(MethodConfig):
    name: str = "simclr"
    temperature: float = 0.1
    proj_hidden_dim: int = 0  # 0: the backbone's width (2048 for ResNet-50), as in the paper
    proj_out_dim: int = 128
    proj_layers: int = 2
    proj_last_bn: bool = True
    gather: bool = True  # negatives from all ranks under torch.distributed


@register("simclr")
class SimCLR(Method):
    Config = SimCLRConfig
    num_views = 2

    def __init__(self, backbone: nn.Module, cfg: SimCLRConfig) -> None:
        super().__init__(backbone, cfg)
        width = backbone.num_features
        self.projector = mlp(
            width,
            cfg.proj_hidden_dim or width,
            cfg.proj_out_dim,
            num_layers=cfg.proj_layers,
            norm="bn",
            last_norm="bn_noshift" if cfg.proj_last_bn else "none",
        )

    def head_layers(self, layers: int) -> nn.Sequential:
        return projection_head_layers(self.projector, layers)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        n = views[0].shape[0]
        z = self.projector(self.backbone(torch.cat(views)))
        z1, z2 = z[:n], z[n:]
        loss = 2 * nt_xent(z1, z2, self.cfg.temperature, gather=self.cfg.gather)  # loss_a + loss_b
        return StepOutput(loss, {"z_std": embedding_std(z1)})
