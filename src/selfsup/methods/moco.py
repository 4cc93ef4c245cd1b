"""MoCo v1 and v2: momentum contrast with a queue of negative keys.

He, Fan, Wu, Xie, Girshick. "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020, arXiv:1911.05722. Chen, Fan, Girshick, He. "Improved Baselines with Momentum Contrastive
Learning", 2020, arXiv:2003.04297. Official code: facebookresearch/moco (``moco/builder.py``).

Follows the official defaults: a query encoder (backbone + head) trained by back-propagation and a key
encoder, its momentum copy (m = 0.999, the loop's EMA after each step, as the official update at the
start of the next step); InfoNCE of each query against its own key and a queue of K = 65,536 earlier
keys (temperature 0.07 for v1, 0.2 for v2); the keys of each step enter the queue afterwards. v1's head
is one linear layer to 128-d; v2's is an MLP (2048 hidden, ReLU, 128 out, biases, no BN). Shuffle-BN:
BN statistics are per GPU (no SyncBN) and the key encoder sees the batch shuffled across GPUs; on one
process, BN statistics come from ``bn_splits`` parts of the batch and the key batch is shuffled
locally, as the official CIFAR-10 demo emulates 8 GPUs. The optimizer (SGD lr 0.03 x bs/256, momentum
0.9, wd 1e-4 on every parameter, BN and biases included, as ``SGD(model.parameters(), ...)`` in
``main_moco.py``; v1's lr / 10 at epochs 120 and 160, v2's cosine; 200 epochs) and augmentations (v2
adds blur) live in the presets.

Deviations: the key encoder's BN running
statistics are copied from the query encoder by the loop's EMA instead of being its own (they are
never used: keys are always computed in training mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..losses import info_nce_queue
from ..nn import FeatureQueue, copy_as_target, mlp
from ..nn.shuffle_bn import batch_shuffle, batch_unshuffle, convert_split_bn, fitting_splits, set_bn_splits
from .base import Method, MethodConfig, Progress, StepOutput, register
from .stats import embedding_std


@dataclass
class MoCoConfig(MethodConfig):
    name: str = "mocov1"
    temperature: float = 0.07
    momentum: float = 0.999
    queue_size: int = 65536
    proj_layers: int = 1  # 1: v1's linear head; 2: v2's MLP head
    proj_hidden_dim: int = 0  # 0: the backbone's width (2048 for ResNet-50), as in v2
    proj_out_dim: int = 128
    shuffle_bn: bool = True
    #: on one process, BN statistics per this many parts of the batch (the paper's 8 GPUs); fewer
    #: when the batch does not divide into that many parts of >= 2 images. Under DDP each rank is one.
    bn_splits: int = 8


@register("mocov1")
class MoCo(Method):
    Config = MoCoConfig
    num_views = 2
    sync_bn = False  # shuffle-BN: per-GPU BatchNorm is the point
    exclude_bias_norm = False  # main_moco.py: SGD(model.parameters(), weight_decay=...) decays all

    def __init__(self, backbone: nn.Module, cfg: MoCoConfig) -> None:
        if cfg.shuffle_bn:
            backbone = convert_split_bn(backbone)
        super().__init__(backbone, cfg)
        width = backbone.num_features
        self.projector = mlp(
            width, cfg.proj_hidden_dim or width, cfg.proj_out_dim, num_layers=cfg.proj_layers, norm="none"
        )
        self.key_backbone = copy_as_target(self.backbone)
        self.key_projector = copy_as_target(self.projector)
        self.queue = FeatureQueue(cfg.queue_size, cfg.proj_out_dim)
        self._shuffles = 0  # seeds the key batch's permutation; set from the global step by on_step

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.key_backbone), (self.projector, self.key_projector)]

    def ema_momentum(self, progress: Progress) -> float:
        return self.cfg.momentum

    def on_step(self, progress: Progress) -> None:
        self._shuffles = progress.step

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Key embeddings of ``x`` from the momentum encoder, computed on the shuffled batch."""
        if not self.cfg.shuffle_bn:
            return self.key_projector(self.key_backbone(x))
        # the permutation is a function of the step, not of the global RNG, so a resumed run shuffles
        # as the uninterrupted one (the loop's data loader draws from the global RNG on resume)
        generator = torch.Generator().manual_seed(0x5EED + self._shuffles)
        self._shuffles += 1
        x, undo = batch_shuffle(x, generator)
        return batch_unshuffle(self.key_projector(self.key_backbone(x)), undo)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        n = views[0].shape[0]
        if self.cfg.shuffle_bn:
            set_bn_splits(self, fitting_splits(n, self.cfg.bn_splits) if dist.world_size() == 1 else 1)
        try:
            q = self.projector(self.backbone(views[0]))
            k = self.keys(views[1])
        finally:  # outside this step the encoder is plain BN (for evaluation or fine-tuning in train mode)
            set_bn_splits(self, 1)
        loss = info_nce_queue(q, k, self.queue(), self.cfg.temperature)
        self.queue.enqueue(F.normalize(k.float(), dim=1))
        return StepOutput(loss, {"z_std": embedding_std(q)})


@dataclass
class MoCoV2Config(MoCoConfig):
    name: str = "mocov2"
    temperature: float = 0.2
    proj_layers: int = 2


@register("mocov2")
class MoCoV2(MoCo):
    """MoCo v1 with v2's MLP head and temperature (the other v2 changes are augmentation and schedule)."""

    Config = MoCoV2Config
