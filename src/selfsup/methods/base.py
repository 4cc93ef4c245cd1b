"""The method protocol: what every self-supervised method provides to the one training loop.

A method is an ``nn.Module`` holding its backbone and heads. ``forward(views)`` takes the list of
augmented views (each ``(B, C, H, W)``) and returns a :class:`StepOutput`. The loop knows nothing
else about it, apart from three declarative hooks with defaults here:

- :meth:`Method.ema_pairs`: ``(online, target)`` module pairs the loop updates by EMA after each
  optimizer step, with momentum from :meth:`Method.ema_momentum` (precomputed per step);
- :meth:`Method.param_groups`: parameter groups for the optimizer (no weight decay and no LARS
  adaptation on biases and norm parameters unless the method declares ``exclude_bias_norm = False``,
  as the official MoCo, SimSiam and SwAV optimizers decay and adapt every parameter);
- :meth:`Method.on_step`: called with the global step before each forward, for methods whose
  behaviour follows the training schedule (temperature warm-up, queue start, ...);
- :meth:`Method.after_backward`: called after gradient clipping, before the optimizer step (to
  drop the gradients of parameters frozen early in training: SwAV prototypes, DINO last layer).

Logging ``z_std`` (see :func:`selfsup.methods.stats.embedding_std`) gives the loop its collapse
signal: it warns once when that value stays low for a sustained window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from ..registry import Registry


class StepOutput(NamedTuple):
    """``loss``: scalar to minimize. ``logs``: detached scalars (or tensors reduced by mean) to record."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor]


@dataclass
class MethodConfig:
    """Base of every method's hyperparameters; ``name`` selects the method in the registry."""

    name: str = ""


@dataclass
class Progress:
    """Where training is: the loop hands this to :meth:`Method.on_step` before each step."""

    step: int
    total_steps: int
    steps_per_epoch: int
    #: the run's seed (``train.seed``), for methods that draw their own randomness per step (masks)
    seed: int = 0

    @property
    def epoch(self) -> float:
        return self.step / max(1, self.steps_per_epoch)


class Method(nn.Module):
    """Base class: subclasses set ``Config`` and implement ``forward``."""

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    #: BatchNorm layers that the paper computes over the global batch; the loop converts them to
    #: SyncBatchNorm under DDP. Methods with shuffle-BN set this False.
    sync_bn: ClassVar[bool] = True
    #: Whether the EMA also copies the online network's buffers (BN running statistics) into the
    #: target (BYOL, MoCo). DINO keeps the teacher's own statistics from its global-crop passes.
    ema_buffers: ClassVar[bool] = True
    #: Whether biases and norm parameters (1-D tensors) are kept out of weight decay and LARS
    #: adaptation, as in SimCLR, BYOL, Barlow Twins, MoCo v3 and DINO. The official MoCo v1/v2,
    #: SimSiam and SwAV optimizers decay (and SwAV's LARC adapts) every parameter: they set False.
    exclude_bias_norm: ClassVar[bool] = True
    #: How many views ``forward`` takes (None: any number, as multi-crop methods); checked before
    #: every forward.
    num_views: ClassVar[int | None] = None

    def __init__(self, backbone: nn.Module, cfg: MethodConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        if self.num_views is not None:
            self.register_forward_pre_hook(_check_view_count)

    # -- what evaluation uses ------------------------------------------------------------------
    @property
    def encoder(self) -> nn.Module:
        """The network evaluated and exported (the teacher for DINO, online backbone for BYOL)."""
        return self.backbone

    # -- hooks used by the training loop ------------------------------------------------------
    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return []

    def ema_momentum(self, progress: Progress) -> float:
        """EMA momentum at this step; methods with EMA override or configure it."""
        return 1.0

    def on_step(self, progress: Progress) -> None:  # noqa: B027 - optional hook
        pass

    def after_backward(self, progress: Progress) -> None:  # noqa: B027 - optional hook
        pass

    def param_groups(self) -> list[dict[str, Any]]:
        return split_decay_groups(self.named_parameters(), exclude=self.exclude_bias_norm)

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """The parameter sets whose gradients ``optim.clip_mode: per_module`` clips to the norm each on its
        own (DINOv2 clips its backbone and each head apart): every top-level submodule's parameters, and the
        method's own parameters together."""
        groups = [list(m.parameters()) for m in self.children()]
        own = list(self.parameters(recurse=False))
        return [g for g in [*groups, own] if g]

    def head_layers(self, layers: int) -> nn.Sequential:
        """A copy of the first ``layers`` layers of the projection head, for fine-tuning from the
        middle of the head (SimCLR v2's ``ft_proj_selector``); methods with such a head override it."""
        raise ValueError(f"method {type(self).__name__} has no projection head to fine-tune from")

    def forward(self, views: list[torch.Tensor]) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_view_count(method: Method, args: tuple) -> None:
    views = args[0]
    if len(views) != method.num_views:
        raise ValueError(f"{type(method).__name__} takes {method.num_views} views, got {len(views)}")


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases and normalization parameters (all 1-D tensors): no weight decay, no LARS adaptation."""
    return param.ndim <= 1 or name.endswith(".bias")


def split_decay_groups(named_params, exclude: bool = True, **extra: Any) -> list[dict[str, Any]]:
    """Trainable parameters in a decayed group and, with ``exclude``, a group of biases and norm
    parameters without weight decay or LARS adaptation; ``extra`` keys go into every group."""
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        (no_decay if exclude and is_no_decay(name, p) else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, **extra})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True, **extra})
    return groups


def vit_layer_id(name: str, depth: int) -> int:
    """A ViT backbone parameter's layer for layer-wise lr decay (DINOv2's ``get_vit_lr_decay_rate``, BEiT's
    rule): 0 for the patch and position embeddings and the CLS, register and mask tokens, ``i + 1`` for
    block ``i``, ``depth + 1`` for the rest (the final norm). ``name`` is relative to the backbone."""
    if name.startswith(("patch_embed.", "pos_embed", "cls_token", "reg_token", "mask_token")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layer_decay_groups(
    method: nn.Module,
    decay: float,
    patch_embed_lr_mult: float = 1.0,
    backbone: str = "backbone",
    layer0: tuple[str, ...] = (),
    exclude: bool = True,
) -> list[dict[str, Any]]:
    """Parameter groups with layer-wise lr decay (DINOv2's ``get_params_groups_with_decay``): a backbone
    parameter of layer ``l`` (:func:`vit_layer_id`) gets ``lr_scale = decay ** (depth + 1 - l)``, the patch
    embedding that times ``patch_embed_lr_mult``, the method's own parameters named in ``layer0`` (a mask
    token kept outside the backbone) layer 0's, every other parameter (the heads) 1. With ``exclude``, biases
    and norm parameters (1-D: LayerScale gains too) have no weight decay (:func:`is_no_decay`). Groups of
    equal settings are merged."""
    net = getattr(method, backbone)
    depth = len(net.blocks)
    fused: dict[tuple[float, bool], list[torch.Tensor]] = {}
    for name, p in method.named_parameters():
        if not p.requires_grad:
            continue
        scale = 1.0
        if name.startswith(backbone + "."):
            rel = name[len(backbone) + 1 :]
            scale = decay ** (depth + 1 - vit_layer_id(rel, depth))
            if rel.startswith("patch_embed."):
                scale *= patch_embed_lr_mult
        elif name in layer0:
            scale = decay ** (depth + 1)
        fused.setdefault((scale, exclude and is_no_decay(name, p)), []).append(p)
    groups = []
    for (scale, no_decay), params in fused.items():
        g: dict[str, Any] = {"params": params, "lr_scale": scale}
        if no_decay:
            g.update(weight_decay=0.0, lars_exclude=True)
        groups.append(g)
    return groups


def cosine_momentum(base: float, final: float, progress: Progress) -> float:
    """BYOL's schedule: ``final - (final - base) * (cos(pi * t / T) + 1) / 2``."""
    t = progress.step / max(1, progress.total_steps)
    return final - (final - base) * (math.cos(math.pi * t) + 1) / 2


METHODS: Registry[type[Method]] = Registry("method")
register = METHODS.register
