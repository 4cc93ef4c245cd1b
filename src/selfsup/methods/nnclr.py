"""NNCLR: nearest-neighbour contrastive learning.

Dwibedi, Aytar, Tompson, Sermanet, Zisserman. "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations", ICCV 2021, arXiv:2104.14548. The authors released no
code (vissl issue #316 asks for one and is pointed to solo-learn); the reference implementations read
here are solo-learn (vturrisi/solo-learn@9187ea3, ``solo/methods/nnclr.py``, ``solo/losses/nnclr.py``)
and lightly (``lightly/models/modules/nn_memory_bank.py``, ``heads.py:209-261``, and lightly-ai/lightly
``examples/pytorch/nnclr.py``).

The method (the paper's eq. 1): each image's first-view projection ``z1`` is replaced by its nearest
neighbour ``NN(z1)`` in a support set ``Q`` of earlier projections (cosine similarity: ``Q`` holds
l2-normalized rows), and that neighbour is the positive of the other view's prediction ``p2``; the
negatives are the predictions ``p2_k`` of the other images of the (global) batch:
``-log exp(NN(z1_i).p2_i / t) / sum_k exp(NN(z1_i).p2_k / t)``, which is
:func:`selfsup.losses.info_nce_batch` with the neighbours as queries and the predictions as keys
(gathered from all ranks with gradient). The loss is symmetric, the mean of that term and the one
with the views swapped (solo-learn ``nnclr.py:197-200``, lightly's example line 76). No gradient
flows through the neighbours (the support set is a buffer); the projector learns through the
predictor. After the loss the normalized first-view projections of all ranks enter the support set
(:class:`selfsup.nn.FeatureQueue`, which gathers them, so every rank searches the same set), as
solo-learn's ``dequeue_and_enqueue(z1)``. Heads (the paper, as lightly quotes it in ``heads.py``): a
projector of 3 linear layers 2048-2048-256, each followed by BN, ReLU after all but the last; a
predictor 4096-256 with BN and ReLU after the hidden layer. Defaults (the paper's sec. 4 values as
stated in this port's brief; the paper's text was not in the reference store to check line by line):
support set 98,304, temperature 0.1, embeddings 256-d; the optimizer (LARS, lr 0.3 x bs/256 at batch
4096, wd 1e-6, 10 warm-up epochs, cosine, 1000 epochs) and BYOL's views live in the presets.

Deviations, and choices the sources read here leave open: the support set starts as random unit vectors (as
solo-learn and lightly), so the first ``queue_size / batch`` steps draw some neighbours from noise;
each view goes through the networks separately (BN statistics per view, as solo-learn and lightly);
linear layers followed by BN have no bias (a no-op before BN; solo-learn's have one). Where the
references differ: lightly's example computes ``NTXentLoss(NN(z0), p1)``, SimCLR's 2N-anchor loss in
which the predictions are anchors too and the other neighbours are also negatives, enqueues the second
view, and keeps a per-GPU bank (no gather); solo-learn is eq. 1 as here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import info_nce_batch
from ..nn import FeatureQueue, mlp
from .base import Method, MethodConfig, StepOutput, register
from .stats import embedding_std


@dataclass
class NNCLRConfig(MethodConfig):
    name: str = "nnclr"
    temperature: float = 0.1
    proj_hidden_dim: int = 2048
    proj_out_dim: int = 256
    proj_layers: int = 3
    pred_hidden_dim: int = 4096
    queue_size: int = 98304  # the support set
    gather: bool = True  # the predictions of all ranks as negatives under torch.distributed


@torch.no_grad()
def nearest_neighbours(z: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """For each row of ``z`` ``(n, d)``, the row of ``support`` ``(K, d)`` (l2-normalized) with the
    highest cosine similarity to it (the paper's ``NN(z, Q)``), ``(n, d)``; computed in float32."""
    with torch.autocast(z.device.type, enabled=False):
        z = F.normalize(z.detach().float(), dim=1)
        idx = (z @ support.float().T).argmax(dim=1)
    return support[idx]


@register("nnclr")
class NNCLR(Method):
    Config = NNCLRConfig
    cfg: NNCLRConfig
    num_views = 2

    def __init__(self, backbone: nn.Module, cfg: NNCLRConfig) -> None:
        super().__init__(backbone, cfg)
        self.projector = mlp(
            backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim, num_layers=cfg.proj_layers, last_norm="bn"
        )
        self.predictor = mlp(cfg.proj_out_dim, cfg.pred_hidden_dim, cfg.proj_out_dim)
        self.queue = FeatureQueue(cfg.queue_size, cfg.proj_out_dim)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z = [self.projector(self.backbone(v)) for v in views]
        p = [self.predictor(zi) for zi in z]
        support = self.queue()  # before this batch enters
        nn1, nn2 = (nearest_neighbours(zi, support) for zi in z)
        t, gather = self.cfg.temperature, self.cfg.gather
        loss = (info_nce_batch(nn1, p[1], t, gather=gather) + info_nce_batch(nn2, p[0], t, gather=gather)) / 2
        z1 = F.normalize(z[0].detach().float(), dim=1)
        self.queue.enqueue(z1)
        # nn_cos: how close the neighbours are (1: each image finds itself or a duplicate)
        return StepOutput(loss, {"z_std": embedding_std(z[0]), "nn_cos": (z1 * nn1).sum(dim=1).mean()})
