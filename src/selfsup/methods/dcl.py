"""DCL and DCLW: SimCLR with the decoupled contrastive loss.

Yeh, Hong, Hsu, Liu, Chen, LeCun. "Decoupled Contrastive Learning", ECCV 2022, arXiv:2110.06848. The
paper's method is "SimCLR with DCL": NT-Xent without the positive pair in the denominator (eq. 6), and
DCLW, whose positive term is weighted by ``w_i = 2 - exp(s_i / sigma) / mean_j exp(s_j / sigma)`` (the
negative von Mises-Fisher weighting, sigma 0.5). No official code was released (lightly-ai/lightly issue
#782 names raminnakhli/Decoupled-Contrastive-Learning as the reference); the implementation compared
with is lightly's (lightly-ai/lightly@e8d317f ``lightly/loss/dcl_loss.py:35-38`` (weights), ``:139-212``
(loss); ``benchmarks/imagenet/resnet50/dcl.py:28-29``, ``dclw.py:29``: SimCLR's head, temperature 0.1,
sigma 0.5).

Everything but the loss is selfsup's SimCLR (methods/simclr.py, the official SimCLR defaults): the
projector (hidden = backbone width, 128 out, BN after each layer, the output BN scale-only), one
backbone pass over both views, negatives gathered from every rank with gradients (2N - 2 per anchor),
global BN. Defaults: temperature 0.1 (lightly's benchmark and raminnakhli ``loss/dcl.py:14``), sigma
0.5 (the paper's). The optimizer (the paper's headline setting, batch 256 for 200 epochs, with SimCLR's
LARS at the square-root rule 0.075 x sqrt(bs)) lives in the presets.

Deviations and choices (no official code to follow):

- The loss is ``loss_a + loss_b``, the sum of the two views' means (the official SimCLR's scale, which
  selfsup's SimCLR and its presets use; raminnakhli's ``train.py`` also sums the two directions), twice
  lightly's mean over the 2N anchors: the same direction, twice the gradient (the CIFAR preset halves
  lightly's SGD learning rate and doubles its weight decay to give lightly's update exactly).
- DCLW's weights carry no gradient (lightly wraps them in ``torch.tensor``; raminnakhli's keep it) and
  are normalized over the global batch under DDP (lightly: over each process's batch), so two processes
  compute what one process with the whole batch does.
- Logs: ``z_std`` and ``pos_cos``, the mean cosine similarity of the positive pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..losses import dcl_loss
from .base import StepOutput, register
from .simclr import SimCLR, SimCLRConfig
from .stats import embedding_std


@dataclass
class DCLConfig(SimCLRConfig):
    name: str = "dcl"


@dataclass
class DCLWConfig(DCLConfig):
    name: str = "dclw"
    sigma: float = 0.5  # the von Mises-Fisher weighting's scale (the paper's 0.5)


@register("dcl")
class DCL(SimCLR):
    Config = DCLConfig
    cfg: DCLConfig

    def _sigma(self) -> float | None:
        return None

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        n = views[0].shape[0]
        z = self.projector(self.backbone(torch.cat(views)))
        z1, z2 = z[:n], z[n:]
        loss = 2 * dcl_loss(z1, z2, self.cfg.temperature, sigma=self._sigma(), gather=self.cfg.gather)
        with torch.no_grad():
            pos_cos = F.cosine_similarity(z1.float(), z2.float(), dim=1).mean()
        return StepOutput(loss, {"z_std": embedding_std(z1), "pos_cos": pos_cos})


@register("dclw")
class DCLW(DCL):
    Config = DCLWConfig
    cfg: DCLWConfig

    def _sigma(self) -> float | None:
        return self.cfg.sigma
