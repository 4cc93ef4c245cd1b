"""DINO.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin. "Emerging Properties in Self-Supervised
Vision Transformers", ICCV 2021, arXiv:2104.14294. Official code: facebookresearch/dino
(``main_dino.py``, ``vision_transformer.py``, ``utils.py``).

Follows the official defaults: a student (backbone + head) and a teacher, its EMA (momentum 0.996 ->
1 by a cosine over training), both with the DINO head: a 3-layer MLP (2048 hidden, GELU; BN in the
hidden layers only for the ResNet-50 recipe) to a 256-d bottleneck, l2-normalized, then a
weight-normalized bias-free linear layer to K = 65,536 outputs whose norm ``g`` is fixed to 1
(``norm_last_layer``); the student's last layer receives no update during the first epoch. The
teacher sees only the global crops, the student every crop (one backbone pass per resolution). The
loss is the cross-entropy between the teacher's centred, sharpened softmax (temperature warmed up
linearly from 0.04 to 0.07 over 30 epochs, indexed by epoch as in the official schedule, then
constant) and the student's softmax (temperature 0.1), averaged over every (teacher global view i,
student view j != i) pair. The center is a buffer updated after each forward by an EMA (0.9) of the
teacher outputs' batch mean, all-reduced across ranks. The teacher backbone is what evaluation
uses. BatchNorm (ResNets) is synchronized; the teacher keeps its own BN statistics (its EMA covers
parameters only, as in the official loop) and has no stochastic depth. The optimizer (AdamW, lr
5e-4 x bs/256, weight decay 0.04 -> 0.4 by a cosine, each parameter's gradient clipped to norm 3.0
(``optim.clip_mode: per_param``, ``utils.clip_gradients``), 10 warm-up epochs; LARS for ResNet-50)
and the crops (2 x 224 + 8 x 96, per-view blur and solarization) live in the presets.

Deviations: the last layer uses torch's ``parametrizations.weight_norm`` (state-dict keys
``original0``/``original1`` instead of ``weight_g``/``weight_v``). ViT position embeddings are
resampled for other input sizes by timm (bicubic), not by DINO's ``interpolate_pos_encoding``
(bicubic with a 0.1 offset on the scale factor).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .. import dist
from ..backbones.vit import forward_mask_token
from ..losses import dino_loss
from ..nn import copy_as_target, mlp
from ..nn.masking import step_rng
from ..nn.multicrop import multicrop_forward
from .base import Method, MethodConfig, Progress, StepOutput, cosine_momentum, register
from .stats import embedding_std


@dataclass
class DINOConfig(MethodConfig):
    name: str = "dino"
    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_layers: int = 3
    use_bn: bool = False  # BN after the head's hidden layers (the official ResNet-50 run)
    norm_last_layer: bool = True  # fix the weight norm g of the last layer to 1
    momentum: float = 0.996  # teacher EMA, raised to momentum_end by a cosine
    momentum_end: float = 1.0
    student_temp: float = 0.1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_temp_epochs: int = 30
    center_momentum: float = 0.9
    freeze_last_layer_epochs: float = 1.0  # the student's last layer gets no update before this epoch
    num_global_views: int = 2  # the leading views, the only ones the teacher sees


def teacher_temperature(epoch: int, warmup_temp: float, temp: float, warmup_epochs: int) -> float:
    """``np.linspace(warmup_temp, temp, warmup_epochs)[epoch]`` during the warm-up, then ``temp``."""
    if epoch >= warmup_epochs:
        return temp
    if warmup_epochs == 1:
        return warmup_temp
    return warmup_temp + (temp - warmup_temp) * epoch / (warmup_epochs - 1)


@torch.no_grad()
def updated_center(center: torch.Tensor, teacher: torch.Tensor, momentum: float) -> torch.Tensor:
    """``momentum * center + (1 - momentum) * mean of teacher`` ``(N, K)`` over every rank's rows."""
    batch_mean = dist.all_reduce_sum(teacher.float().sum(dim=0, keepdim=True)) / (len(teacher) * dist.world_size())
    return center * momentum + batch_mean * (1 - momentum)


def last_layer(bottleneck_dim: int, out_dim: int, norm_last_layer: bool) -> nn.Module:
    """The weight-normalized, bias-free output layer, its norm ``g`` at 1 (and fixed with ``norm_last_layer``)."""
    layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
    g = layer.parametrizations.weight.original0
    with torch.no_grad():
        g.fill_(1.0)
    g.requires_grad_(not norm_last_layer)
    return layer


class DINOHead(nn.Module):
    """MLP -> l2-normalized bottleneck -> weight-normalized linear layer (``forward`` gives logits)."""

    def __init__(self, in_dim: int, cfg: DINOConfig, out_dim: int | None = None) -> None:
        super().__init__()
        norm = "bn" if cfg.use_bn else "none"
        self.mlp = mlp(in_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.head_layers, norm=norm, act="gelu")
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):  # official _init_weights
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.last_layer = last_layer(cfg.bottleneck_dim, out_dim or cfg.out_dim, cfg.norm_last_layer)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.bottleneck(x))


@register("dino")
class DINO(Method):
    Config = DINOConfig
    #: parameters only: the teacher's BN statistics stay its own (from the global crops)
    ema_buffers = False

    center: torch.Tensor

    def __init__(self, backbone: nn.Module, cfg: DINOConfig) -> None:
        super().__init__(backbone, cfg)
        self.build_heads(backbone.num_features)
        self.teacher_backbone = copy_as_target(backbone)
        self.teacher_head = copy_as_target(self.head)
        for name in self.extra_heads:
            setattr(self, f"teacher_{name}", copy_as_target(getattr(self, name)))
        for m in self.teacher_backbone.modules():  # the teacher has no stochastic depth
            if hasattr(m, "drop_prob"):
                m.drop_prob = 0.0
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        self._teacher_temp = self._temperature(0)

    #: heads beside ``head`` that have a teacher copy ``teacher_<name>`` (DINOv2's separate iBOT head)
    extra_heads: tuple[str, ...] = ()

    def build_heads(self, in_dim: int) -> None:
        """The student's heads (the teacher's are copies): DINO's one; iBOT and DINOv2 add theirs."""
        self.head = DINOHead(in_dim, self.cfg)

    def last_layers(self) -> list[nn.Module]:
        """The output layers that get no update before ``freeze_last_layer_epochs`` (the official
        ``cancel_gradients_last_layer``: every parameter named ``last_layer``)."""
        return [
            m
            for name, m in self.named_modules()
            if name.split(".")[-1].startswith("last_layer") and not name.startswith("teacher_")
        ]

    @property
    def encoder(self) -> nn.Module:
        return self.teacher_backbone

    def _temperature(self, epoch: int) -> float:
        c = self.cfg
        return teacher_temperature(epoch, c.warmup_teacher_temp, c.teacher_temp, c.warmup_teacher_temp_epochs)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = [(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)]
        return pairs + [(getattr(self, n), getattr(self, f"teacher_{n}")) for n in self.extra_heads]

    def ema_momentum(self, progress: Progress) -> float:
        return cosine_momentum(self.cfg.momentum, self.cfg.momentum_end, progress)

    def on_step(self, progress: Progress) -> None:
        self._teacher_temp = self._temperature(int(progress.epoch))

    def after_backward(self, progress: Progress) -> None:
        if progress.epoch < self.cfg.freeze_last_layer_epochs:
            for layer in self.last_layers():
                for p in layer.parameters():
                    p.grad = None

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        g = self.cfg.num_global_views
        if len(views) < max(2, g):
            raise ValueError(f"DINO needs at least {max(2, g)} views (the first {g} are global), got {len(views)}")
        n = views[0].shape[0]
        z = self.head.bottleneck(multicrop_forward(self.backbone, views))
        student = self.head.last_layer(z)
        with torch.no_grad():
            teacher = self.teacher_head(multicrop_forward(self.teacher_backbone, views[:g]))
        loss = dino_loss(
            list(student.split(n)), list(teacher.split(n)), self.center, self._teacher_temp, self.cfg.student_temp
        )
        if self.training:
            self.center.copy_(updated_center(self.center, teacher, self.cfg.center_momentum))
        logs = {"z_std": embedding_std(z[:n]), "teacher_temp": torch.tensor(self._teacher_temp, device=loss.device)}
        return StepOutput(loss, logs)


class MaskedDINO(DINO):
    """What iBOT and DINOv2 add to DINO alike: a ViT student that sees its global crops with patch masks (a
    learned ``mask_token``, zero-initialized, replacing the masked patch embeddings before the position
    embedding), a second center ``center2`` for the patch outputs, and masks drawn from
    :func:`~selfsup.nn.masking.step_rng` (the run's seed, the step and the rank: a resumed run draws the masks
    of an uninterrupted one). Subclasses draw the masks (``draw_masks``) and compute the loss."""

    center2: torch.Tensor

    def __init__(self, backbone: nn.Module, cfg: DINOConfig, patch_dim: int) -> None:
        if not isinstance(backbone, VisionTransformer):
            raise ValueError(
                f"{type(self).__name__} masks patch tokens: it needs a ViT backbone (vit_...), "
                f"got {type(backbone).__name__}"
            )
        super().__init__(backbone, cfg)
        self.register_buffer("center2", torch.zeros(1, patch_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, backbone.embed_dim))
        self._rng = step_rng(0, 0, 0)

    def on_step(self, progress: Progress) -> None:
        super().on_step(progress)
        self._rng = step_rng(progress.seed, progress.step, dist.rank())

    def global_crops(self, views: list[torch.Tensor]) -> tuple[int, tuple[int, int], torch.Tensor]:
        """``(batch, patch grid, the global crops concatenated crop-major)``, after checking the views."""
        g = self.cfg.num_global_views
        if len(views) < max(2, g) or any(v.shape != views[0].shape for v in views[1:g]):
            raise ValueError(
                f"{type(self).__name__} needs at least {max(2, g)} views, the first {g} (global) of one size"
            )
        p = self.backbone.patch_embed.patch_size
        grid = (views[0].shape[-2] // p[0], views[0].shape[-1] // p[1])
        return views[0].shape[0], grid, torch.cat(views[:g])

    def student_tokens(
        self, views: list[torch.Tensor], glob: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The student on the masked global crops (every token, ``(g * B, prefix + N, D)``) and the [CLS]
        features of every crop, the local ones unmasked (``(V * B, D)``, global crops first)."""
        tokens = forward_mask_token(self.backbone, glob, masks, self.mask_token[0])
        g = self.cfg.num_global_views
        cls = tokens[:, 0]
        if len(views) > g:
            cls = torch.cat([cls, multicrop_forward(self.backbone, views[g:])])
        return tokens, cls
