"""SimCLR v2.

Chen, Kornblith, Swersky, Norouzi, Hinton. "Big Self-Supervised Models are Strong Semi-Supervised
Learners", NeurIPS 2020, arXiv:2006.10029. Official code: google-research/simclr (``tf2/``).

Follows the paper and the official defaults: SimCLR v1's NT-Xent at the official scale (``loss_a +
loss_b``, ``tf2/objective.py``; temperature 0.1, negatives from all replicas, global BN) with a deeper
projection head, 3 layers (``num_proj_layers=3``; hidden width = the backbone's, 128 out, BN after
every layer, ReLU after the hidden ones, the output BN with a scale and no shift), and a MoCo-style memory:
a momentum copy of backbone + head (EMA 0.999) whose embeddings of each batch are queued (65,536) and
serve every anchor as extra negatives (sec. 2, "we also incorporate the memory mechanism from MoCo").
Fine-tuning starts from the middle of the head (``ft_proj_selector=1``, ``finetune_layer``):
``selfsup finetune --head-layers 1`` puts :meth:`SimCLRv2.head_layers` between backbone and
classifier. The wide and selective-kernel ResNets are the ``r50-{1,2,3}x[-sk]`` backbones; LARS
(lr 0.1 x sqrt(bs), i.e. 6.4 at 4096; wd 1e-4; 5% warm-up; cosine; 800 epochs) lives in the preset.

Deviations: the paper does not say which views enter the memory; here the momentum embeddings of both
views of every image do (so 2 x global batch keys per step). The memory itself follows the paper's
text: the official code has no queue or memory network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import nt_xent
from ..nn import FeatureQueue, copy_as_target, mlp, projection_head_layers
from .base import Method, MethodConfig, Progress, StepOutput, register
from .stats import embedding_std


@dataclass
class SimCLRv2Config(MethodConfig):
    name: str = "simclrv2"
    temperature: float = 0.1
    proj_layers: int = 3
    proj_hidden_dim: int = 0  # 0: the backbone's width, as in the official head
    proj_out_dim: int = 128
    finetune_layer: int = 1  # fine-tune from this head layer's output (0: the backbone's)
    queue_size: int = 65536  # memory of momentum embeddings used as negatives; 0 disables it
    momentum: float = 0.999  # EMA of the memory network
    gather: bool = True  # negatives from all ranks under torch.distributed


@register("simclrv2")
class SimCLRv2(Method):
    Config = SimCLRv2Config
    num_views = 2

    def __init__(self, backbone: nn.Module, cfg: SimCLRv2Config) -> None:
        super().__init__(backbone, cfg)
        if not 0 <= cfg.finetune_layer <= cfg.proj_layers:
            raise ValueError(f"method.finetune_layer={cfg.finetune_layer} is not in [0, {cfg.proj_layers}]")
        width = backbone.num_features
        self.projector = mlp(
            width,
            cfg.proj_hidden_dim or width,
            cfg.proj_out_dim,
            num_layers=cfg.proj_layers,
            norm="bn",
            last_norm="bn_noshift",
        )
        self.queue: FeatureQueue | None = None
        if cfg.queue_size > 0:
            self.memory_backbone = copy_as_target(self.backbone)
            self.memory_projector = copy_as_target(self.projector)
            self.queue = FeatureQueue(cfg.queue_size, cfg.proj_out_dim)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        if self.queue is None:
            return []
        return [(self.backbone, self.memory_backbone), (self.projector, self.memory_projector)]

    def ema_momentum(self, progress: Progress) -> float:
        return self.cfg.momentum

    def head_layers(self, layers: int) -> nn.Sequential:
        return projection_head_layers(self.projector, layers)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        n = views[0].shape[0]
        x = torch.cat(views)
        z = self.projector(self.backbone(x))
        negatives = None
        if self.queue is not None:
            negatives = self.queue()
            with torch.no_grad():
                keys = self.memory_projector(self.memory_backbone(x))
        # loss_a + loss_b, the official scale (see selfsup.methods.simclr)
        loss = 2 * nt_xent(z[:n], z[n:], self.cfg.temperature, gather=self.cfg.gather, negatives=negatives)
        if self.queue is not None:  # view by view, so the queue's order does not depend on the rank count
            keys = F.normalize(keys.float(), dim=1)
            self.queue.enqueue(keys[:n])
            self.queue.enqueue(keys[n:])
        return StepOutput(loss, {"z_std": embedding_std(z[:n])})
