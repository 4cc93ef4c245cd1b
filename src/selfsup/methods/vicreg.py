"""VICReg.

Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022, arXiv:2105.04906. Official code: facebookresearch/vicreg (``main_vicreg.py``).

Follows the official code (commit 4e12602): an expander 8192-8192-8192 (``--mlp``, line 44) whose
hidden linear layers have a bias and are followed by BN and ReLU, and whose last linear layer has no
bias and no norm (``Projector``, lines 223-232); each view through the networks separately (lines
195-196) with every BN synchronized across GPUs (line 107; ``sync_bn`` here); the loss
``25 * invariance + 25 * variance + 1 * covariance`` (``--sim-coeff``, ``--std-coeff``, ``--cov-coeff``,
lines 58-63) of :func:`selfsup.losses.vicreg_terms`: the invariance (MSE) over each GPU's own batch,
the variance (hinge at 1 on the std, eps 1e-4, averaged over the two views) and the covariance (squared
off-diagonal entries over d, summed over the two views) over the global batch gathered with gradient
(``FullGatherLayer``, lines 200-201, 307-323: backward sums the gradients over ranks, as
:func:`selfsup.dist.gather`). The optimizer lives in the presets: LARS (eta 1e-3, momentum 0.9,
biases and BN parameters excluded from weight decay and adaptation, lines 109-115, 235-236), wd 1e-6,
lr ``base_lr x batch / 256`` with 10 warm-up epochs from 0 and a cosine to 1/1000 of the peak
(``adjust_learning_rate``, lines 167-181), ResNet-50 with ``zero_init_residual=True`` (line 190).
``main_vicreg.py`` defaults to 100 epochs at batch 2048 and base lr 0.2 (lines 48-52); the README's
1000-epoch command (README.md:80, the paper's setting) keeps batch 2048 and base lr 0.2, its 100-epoch
one (README.md:72) uses batch 512 and base lr 0.3.

Deviations: the loss is computed in float32 under autocast (the official code runs it in fp16 under
``torch.cuda.amp.autocast``). The covariance denominator is the gathered batch ``N - 1`` rather than
the configured ``--batch-size - 1`` (the same when the last batch is full). Not a deviation but a
difference between references: solo-learn (``solo/losses/vicreg.py:55``) sums the two views' variance
terms where the official code averages them (line 207, as here), so the CIFAR-10 preset, solo-learn's
recipe, doubles ``std_coeff`` to give solo-learn's loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..losses import vicreg_terms
from ..nn import mlp
from .base import Method, MethodConfig, StepOutput, register
from .stats import embedding_std


@dataclass
class VICRegConfig(MethodConfig):
    name: str = "vicreg"
    proj_hidden_dim: int = 8192
    proj_out_dim: int = 8192
    proj_layers: int = 3
    sim_coeff: float = 25.0  # invariance weight (lambda)
    std_coeff: float = 25.0  # variance weight (mu), on the mean of the two views' variance terms
    cov_coeff: float = 1.0  # covariance weight (nu)
    gamma: float = 1.0  # target standard deviation of every embedding dimension
    eps: float = 1e-4  # added to the variance under the square root
    gather: bool = True  # variance and covariance over all ranks' embeddings under torch.distributed


@register("vicreg")
class VICReg(Method):
    Config = VICRegConfig
    cfg: VICRegConfig
    num_views = 2

    def __init__(self, backbone: nn.Module, cfg: VICRegConfig) -> None:
        super().__init__(backbone, cfg)
        # the official Projector: Linear (with bias) + BN + ReLU, ..., last Linear without bias
        self.projector = mlp(
            backbone.num_features,
            cfg.proj_hidden_dim,
            cfg.proj_out_dim,
            num_layers=cfg.proj_layers,
            bias=True,
            last_bias=False,
        )

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z1, z2 = (self.projector(self.backbone(v)) for v in views)
        cfg = self.cfg
        terms = vicreg_terms(z1, z2, cfg.gamma, cfg.eps, gather=cfg.gather)
        loss = terms.weighted(cfg.sim_coeff, cfg.std_coeff, cfg.cov_coeff)
        logs = {
            "z_std": embedding_std(z1),
            "invariance": terms.invariance.detach(),
            "variance": terms.variance.detach(),
            "covariance": terms.covariance.detach(),
        }
        return StepOutput(loss, logs)
