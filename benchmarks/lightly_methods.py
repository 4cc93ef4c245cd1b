"""lightly's own implementation of the methods it shares with selfsup, as selfsup ``Method`` objects.

The quality protocol (``protocol.py``) trains these side by side with selfsup's methods, through
selfsup's own training loop (``selfsup.fit``), so that the data, views, optimizer, schedule, batch,
epochs and the backbone (the same torchvision module, built by selfsup from the same seed) are
identical by construction. Only what lightly implements differs: the heads
(``lightly.models.modules``), the losses (``lightly.loss``), the momentum copies (``copy.deepcopy`` +
``deactivate_requires_grad``, as lightly's examples) and each forward pass as lightly's examples
write it (``examples/pytorch/<method>.py``). The EMA itself is declared with ``ema_pairs`` and done
by selfsup's loop with the preset's momentum schedule, parameters only (``ema_buffers = False``, as
``lightly.models.utils.update_momentum``). iBOT and DINOv2 also keep selfsup's masks (drawn by the same
functions from the same per-step generator, ``selfsup.nn.masking``), a learned mask token and selfsup's
masked encoder (``selfsup.backbones.vit.forward_mask_token``) in place of lightly's ``random_block_mask`` and
``MaskedVisionTransformerTIMM``, so that the student sees the same masked crops in both rows.

Every hyperparameter is read from the selfsup method config of the same run (``cfg.method``): head
sizes, temperatures, queue size, momentum, Sinkhorn epsilon and iterations, the teacher temperature
schedules, the freezing of SwAV's prototypes and DINO's last layer, the loss weights and mask ratios of
iBOT and DINOv2. A setting lightly's modules cannot
express raises ``ValueError`` instead of being silently dropped.

These classes are NOT in selfsup's method registry: build them with :func:`build_lightly`.

Known differences of lightly's implementation from selfsup's (kept: they are lightly's):

- SimCLR, SwAV and DINO: one backbone pass per view (BatchNorm statistics per view); selfsup
  concatenates the two SimCLR views, and one pass per resolution for multi-crop.
- MoCo v2: no shuffle-BN (lightly's example has none) and a memory bank initialised with random unit
  vectors that is used from the first step (selfsup's queue is the same, both are 4,096 keys).
- SimCLR: lightly's ``NTXentLoss`` is the mean over the 2N anchors; selfsup's (and the official
  code's) sums the two views' means, twice lightly's: the same direction, half the gradient.
  lightly's output BN has a shift; selfsup's (the official ``center=False``) has a scale only.
- BYOL: ``0.5 * (NegCos(p0, z1) + NegCos(p1, z0))``, whose gradient is a quarter of selfsup's
  ``normalized_mse`` sum (2 - 2cos per term): the same direction, a different scale. lightly's
  output layers have a bias (selfsup's, as Haiku's, have none).
- SimSiam and Barlow Twins: lightly's heads and losses compute the same function as selfsup's from
  the same initial weights (checked: equal losses at step 0), so these two rows differ only by
  floating-point order; they check the harness more than they compare two implementations.
- SwAV: lightly's ``SwaVPrototypes`` is a ``nn.Linear`` *with* a bias; its Sinkhorn does not subtract
  the maximum before ``exp`` (no-op mathematically); the prototypes are frozen by toggling
  ``requires_grad`` for ``n_steps_frozen_prototypes`` steps.
- DINO: ``DINOProjectionHead`` uses the deprecated ``torch.nn.utils.weight_norm`` (so the teacher head is
  built anew and loaded, not deep-copied, as in throughput.py) and always has 3 MLP layers.
- iBOT: lightly's ``IBOTPatchLoss`` is DINOv2's patch loss: its center is an EMA of the mean of the teacher's
  outputs at the *masked* patches (the official iBOT's ``center2``, and selfsup's, average every patch token of
  the global crops), which is also why the teacher head runs on the masked patches only. lightly has no iBOT
  head (a second output layer for the patches): one ``DINOProjectionHead`` for [CLS] and patches, so
  ``shared_head`` must be true. lightly's example has one teacher temperature for both terms, warmed up per step;
  here the [CLS] term has ``DINOLoss``'s per-epoch schedule (the official one) and the patch term the config's
  patch schedule (``selfsup.methods.ibot.patch_temperature``, passed as ``teacher_temp``). The normalizations
  are the official ones: the [CLS] term is the mean over the (teacher global crop, other student crop) pairs,
  the patch term the per-image mean over the masked patches, then the mean over every global crop (an unmasked
  crop counts 0). A batch without any masked patch (before ``pred_start_epoch``) gets a patch loss of 0 and no
  center update (lightly's center would average an empty batch: NaN).
- DINOv2: lightly's ``DINOv2ProjectionHead`` (its examples' and benchmark's head, not ``DINOProjectionHead``) has
  no fixed-norm option (its last layer's norm trains: ``norm_last_layer`` must be false, as the official head)
  and no ``cancel_last_layer_gradients``: the last layers' gradients are dropped for
  ``freeze_last_layer_epochs`` (selfsup's way; lightly's benchmark sets their lr to 0 for the first epoch).
  lightly's ``DINOLoss`` and ``IBOTPatchLoss`` center by the mean only: ``centering: sinkhorn_knopp`` (the
  paper's) raises. The [CLS] term is the mean over the ``2 + 2 L`` pairs: the official ``2 + max(2 L, 1)``
  divisor for ``L >= 1`` local crops, but 2 instead of 3 without local crops. ``KoLeoLoss`` searches each
  process's own batch (the official per-rank search; selfsup's default gathers every rank: the same on one
  process). The teacher temperature is lightly's benchmark's ``linear_warmup_schedule`` (``step / W`` over
  ``W`` = ``warmup_teacher_temp_epochs`` epochs of steps; the official and selfsup's ``linspace``: ``step /
  (W - 1)``). The optimizer's groups are selfsup's ``layer_decay_groups``, which give the same rates and decay
  as lightly's benchmark's per-parameter groups; gradient clipping is the preset's (per module), where
  lightly's benchmark clips the global norm.
- DCL and DCLW: one backbone pass per view; lightly's ``DCLLoss``/``DCLWLoss`` equal selfsup's ``dcl_loss``
  (checked on the same projections), the mean over the 2N anchors, which selfsup's method doubles
  (``loss_a + loss_b``, as SimCLR's): the same direction, half the gradient; lightly's output BN has a
  shift (selfsup's, as SimCLR's, a scale only); DCLW's weights are normalized over each process's batch
  (selfsup: over the global batch; the same on one process).
- TiCo: lightly's ``TiCoLoss`` computes the same function as selfsup's ``tico_loss`` (checked: equal losses
  and running matrices over several steps) but keeps ``C`` as a plain attribute: it is not in the state
  dict, so a resumed lightly run restarts it from zeros.
- MMCR: lightly's ``MMCRLoss`` does not l2-normalize the projections (the official code and selfsup do),
  takes the local nuclear norms over the online and momentum views together (official: online only) and
  does not gather across processes (each process's own centroid matrix); one backbone pass per view
  (selfsup and the official code: all views in one BN batch). On normalized inputs its loss equals selfsup's.
- VICReg: ``VICRegLoss`` is the official loss (local MSE, variance hinge averaged over the two views,
  covariance summed; gathered with gradient) with the hinge fixed at 1 (``gamma``); ``VICRegProjectionHead``'s
  hidden layers have no bias (the official ones do: a no-op before BN) and its last layer has one (the
  official one has none; VICReg's loss is blind to a shift common to both views, so it never trains).
- NNCLR: lightly's example computes ``NTXentLoss(NN(z0), p1)``, SimCLR's 2N-anchor loss, in which the
  predictions are anchors too and the other neighbours are negatives as well (selfsup and solo-learn: the
  paper's eq. 1, each neighbour against the other view's predictions of the batch); it enqueues the second
  view's projections (selfsup, as solo-learn: the first view's); ``NNMemoryBankModule`` does not gather
  across processes (each process searches its own bank; selfsup's support set holds all ranks'
  projections) and its bank is not in the state dict (a resumed lightly run restarts it at random).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from lightly.loss import (
    BarlowTwinsLoss,
    DINOLoss,
    IBOTPatchLoss,
    KoLeoLoss,
    NegativeCosineSimilarity,
    NTXentLoss,
    SwaVLoss,
)
from lightly.loss.dcl_loss import DCLLoss, DCLWLoss
from lightly.loss.mmcr_loss import MMCRLoss
from lightly.loss.tico_loss import TiCoLoss
from lightly.loss.vicreg_loss import VICRegLoss
from lightly.models.modules import (
    BarlowTwinsProjectionHead,
    BYOLPredictionHead,
    BYOLProjectionHead,
    DINOProjectionHead,
    DINOv2ProjectionHead,
    MMCRProjectionHead,
    MoCoProjectionHead,
    NNCLRPredictionHead,
    NNCLRProjectionHead,
    NNMemoryBankModule,
    SimCLRProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    SwaVProjectionHead,
    SwaVPrototypes,
)
from lightly.models.modules.heads import ProjectionHead, TiCoProjectionHead, VICRegProjectionHead
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import deactivate_requires_grad
from lightly.utils.scheduler import linear_warmup_schedule
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from selfsup import dist
from selfsup.backbones import backbone_from_config
from selfsup.backbones.vit import forward_mask_token
from selfsup.config import Config
from selfsup.methods import METHODS
from selfsup.methods.base import (
    Method,
    Progress,
    StepOutput,
    cosine_momentum,
    layer_decay_groups,
    split_decay_groups,
)
from selfsup.methods.dinov2 import DINOv2
from selfsup.methods.ibot import IBOT, patch_temperature
from selfsup.methods.stats import embedding_std
from selfsup.nn.masking import BlockMasking, step_rng
from selfsup.nn.multicrop import multicrop_forward


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"lightly's implementation cannot express {what}")


def _momentum_copy(module: nn.Module) -> nn.Module:
    """lightly's examples: ``copy.deepcopy`` and ``deactivate_requires_grad``."""
    target = copy.deepcopy(module)
    deactivate_requires_grad(target)
    return target


def _fp32(fn, *tensors: torch.Tensor, **kwargs):
    """Call a lightly loss in float32 with autocast off (as selfsup's losses run, see ``precision.fp32``)."""
    with torch.autocast(tensors[0].device.type, enabled=False):
        return fn(*[t.float() for t in tensors], **kwargs)


class LightlyMethod(Method):
    """Base: lightly's ``update_momentum`` averages parameters only, so the loop's EMA does too.

    The optimizer's parameter groups are the protocol's, not the implementation's: ``build_lightly``
    copies ``exclude_bias_norm`` (which parameters are decayed and LARS-adapted) from selfsup's class
    for the method, and SimSiam and Barlow Twins reproduce selfsup's groups (fixed predictor lr,
    bias lr scale)."""

    ema_buffers = False


class LightlySimCLR(LightlyMethod):
    """examples/pytorch/simclr.py: ``SimCLRProjectionHead`` + ``NTXentLoss``, one pass per view."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        super().__init__(backbone, cfg)
        _require(cfg.proj_last_bn, "SimCLR without BN on the projection output (proj_last_bn=false)")
        w = backbone.num_features
        self.projection_head = SimCLRProjectionHead(
            w, cfg.proj_hidden_dim or w, cfg.proj_out_dim, num_layers=cfg.proj_layers, batch_norm=True
        )
        self.criterion = NTXentLoss(temperature=cfg.temperature, gather_distributed=cfg.gather)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z0, z1 = (self.projection_head(self.backbone(v)) for v in views)
        return StepOutput(_fp32(self.criterion, z0, z1), {"z_std": embedding_std(z0)})


class LightlyMoCo(LightlyMethod):
    """examples/pytorch/moco.py: ``MoCoProjectionHead`` (no BN), momentum copies, ``NTXentLoss`` with a
    memory bank of ``(queue_size, proj_out_dim)``; query from view 0, key from view 1; no shuffle-BN."""

    sync_bn = False  # per-process BN, as selfsup's MoCo

    def __init__(self, backbone: nn.Module, cfg) -> None:
        super().__init__(backbone, cfg)
        _require(cfg.proj_layers >= 2, "MoCo v1's linear head (MoCoProjectionHead has at least 2 layers)")
        w = backbone.num_features
        self.projection_head = MoCoProjectionHead(
            w, cfg.proj_hidden_dim or w, cfg.proj_out_dim, num_layers=cfg.proj_layers, batch_norm=False
        )
        self.backbone_momentum = _momentum_copy(self.backbone)
        self.projection_head_momentum = _momentum_copy(self.projection_head)
        self.criterion = NTXentLoss(temperature=cfg.temperature, memory_bank_size=(cfg.queue_size, cfg.proj_out_dim))

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.backbone_momentum), (self.projection_head, self.projection_head_momentum)]

    def ema_momentum(self, progress: Progress) -> float:
        return self.cfg.momentum

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        query = self.projection_head(self.backbone(views[0]))
        with torch.no_grad():
            key = self.projection_head_momentum(self.backbone_momentum(views[1]))
        return StepOutput(_fp32(self.criterion, query, key), {"z_std": embedding_std(query)})


class LightlyBYOL(LightlyMethod):
    """examples/pytorch/byol.py: ``BYOLProjectionHead``/``BYOLPredictionHead``, momentum copies,
    ``0.5 * (NegativeCosineSimilarity(p0, z1) + NegativeCosineSimilarity(p1, z0))``."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        super().__init__(backbone, cfg)
        self.projection_head = BYOLProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.prediction_head = BYOLPredictionHead(cfg.proj_out_dim, cfg.pred_hidden_dim, cfg.proj_out_dim)
        self.backbone_momentum = _momentum_copy(self.backbone)
        self.projection_head_momentum = _momentum_copy(self.projection_head)
        self.criterion = NegativeCosineSimilarity()

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.backbone_momentum), (self.projection_head, self.projection_head_momentum)]

    def ema_momentum(self, progress: Progress) -> float:
        return cosine_momentum(self.cfg.momentum, self.cfg.momentum_end, progress)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z = [self.projection_head(self.backbone(v)) for v in views]
        p = [self.prediction_head(zi) for zi in z]
        with torch.no_grad():
            t = [self.projection_head_momentum(self.backbone_momentum(v)) for v in views]
        loss = 0.5 * (_fp32(self.criterion, p[0], t[1]) + _fp32(self.criterion, p[1], t[0]))
        return StepOutput(loss, {"z_std": embedding_std(z[0])})


class LightlySimSiam(LightlyMethod):
    """examples/pytorch/simsiam.py: ``SimSiamProjectionHead``/``SimSiamPredictionHead``, stop-gradient
    on z, ``0.5 * (NegCos(p0, z1) + NegCos(p1, z0))``. The CIFAR preset's 2-layer projector is
    lightly's ``ProjectionHead`` with SimSiamProjectionHead's blocks minus the middle one (that class
    has 3 layers, fixed)."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        super().__init__(backbone, cfg)
        w = backbone.num_features
        hidden = cfg.proj_hidden_dim or w
        _require(cfg.proj_layers in (2, 3), f"a {cfg.proj_layers}-layer SimSiam projector")
        if cfg.proj_layers == 3:
            self.projection_head = SimSiamProjectionHead(w, hidden, cfg.proj_out_dim)
        else:
            self.projection_head = ProjectionHead(
                [
                    (w, hidden, nn.BatchNorm1d(hidden), nn.ReLU()),
                    (hidden, cfg.proj_out_dim, nn.BatchNorm1d(cfg.proj_out_dim, affine=False), None),
                ]
            )
        self.prediction_head = SimSiamPredictionHead(cfg.proj_out_dim, cfg.pred_hidden_dim, cfg.proj_out_dim)
        self.criterion = NegativeCosineSimilarity()

    def param_groups(self) -> list[dict[str, Any]]:
        # the optimizer is the protocol's, not the implementation's: selfsup's SimSiam groups (the
        # predictor at the peak learning rate with fix_pred_lr; decay as selfsup's exclude_bias_norm)
        pred = {id(p) for p in self.prediction_head.parameters()}
        named = list(self.named_parameters())
        encoder = [(n, p) for n, p in named if id(p) not in pred]
        head = [(n, p) for n, p in named if id(p) in pred]
        return split_decay_groups(encoder, self.exclude_bias_norm) + split_decay_groups(
            head, self.exclude_bias_norm, fixed_lr=self.cfg.fix_pred_lr
        )

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z = [self.projection_head(self.backbone(v)) for v in views]
        p = [self.prediction_head(zi) for zi in z]
        z = [zi.detach() for zi in z]
        loss = 0.5 * (_fp32(self.criterion, p[0], z[1]) + _fp32(self.criterion, p[1], z[0]))
        return StepOutput(loss, {"z_std": embedding_std(z[0])})


class LightlyBarlowTwins(LightlyMethod):
    """examples/pytorch/barlowtwins.py: ``BarlowTwinsProjectionHead`` + ``BarlowTwinsLoss(lambda)``,
    times the preset's ``loss_scale`` (solo-learn's scale_loss; lightly's loss has no such factor)."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        super().__init__(backbone, cfg)
        _require(cfg.proj_layers == 3, f"a {cfg.proj_layers}-layer Barlow Twins projector")
        self.projection_head = BarlowTwinsProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.criterion = BarlowTwinsLoss(lambda_param=cfg.lambd, gather_distributed=True)

    def param_groups(self) -> list[dict[str, Any]]:
        # selfsup's groups (the optimizer is the protocol's): biases and norms at bias_lr_scale x lr
        groups = split_decay_groups(self.named_parameters(), self.exclude_bias_norm)
        for g in groups:
            if g.get("lars_exclude"):
                g["lr_scale"] = self.cfg.bias_lr_scale
        return groups

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z0, z1 = (self.projection_head(self.backbone(v)) for v in views)
        loss = self.cfg.loss_scale * _fp32(self.criterion, z0, z1)
        return StepOutput(loss, {"z_std": embedding_std(z0)})


class LightlySwAV(LightlyMethod):
    """examples/pytorch/swav.py (swav_queue.py for the queue): ``SwaVProjectionHead``, l2-normalized
    features, ``SwaVPrototypes`` normalized before every step and frozen for the preset's first
    ``freeze_prototypes_epochs``, ``SwaVLoss(temperature, sinkhorn_iterations, sinkhorn_epsilon)``;
    one pass per crop; the queue: one ``MemoryBankModule`` per global crop, filled from the first
    step, its prototype scores added to Sinkhorn from ``queue_start_epoch``."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        super().__init__(backbone, cfg)
        self.projection_head = SwaVProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim)
        # frozen for the preset's first freeze_prototypes_epochs: a step count, set in on_step once the
        # steps per epoch are known (lightly toggles requires_grad for the first n steps)
        self._frozen = cfg.freeze_prototypes_epochs > 0
        self.prototypes = SwaVPrototypes(
            cfg.proj_out_dim, n_prototypes=cfg.num_prototypes, n_steps_frozen_prototypes=int(self._frozen)
        )
        self.criterion = SwaVLoss(
            temperature=cfg.temperature,
            sinkhorn_iterations=cfg.sinkhorn_iterations,
            sinkhorn_epsilon=cfg.epsilon,
            sinkhorn_gather_distributed=True,
        )
        self.queues = nn.ModuleList(
            [MemoryBankModule(size=(cfg.queue_length, cfg.proj_out_dim)) for _ in range(cfg.num_global_views)]
            if cfg.queue_length > 0
            else []
        )
        self._step, self._epoch = 0, 0.0

    def on_step(self, progress: Progress) -> None:
        self.prototypes.normalize()
        if self._frozen:
            steps = math.ceil(self.cfg.freeze_prototypes_epochs * progress.steps_per_epoch)
            self.prototypes.n_steps_frozen_prototypes = max(1, steps)
        self._step, self._epoch = progress.step, progress.epoch

    @torch.no_grad()
    def _queue_scores(self, high: list[torch.Tensor]) -> list[torch.Tensor] | None:
        if not self.queues or not self.training:
            return None
        feats = []
        for q, f in zip(self.queues, high):
            _, bank = q(f.detach().float(), update=True)  # (dim, length), before this batch enters
            feats.append(bank.T)
        if self._epoch < self.cfg.queue_start_epoch:
            return None
        return [self.prototypes(f, self._step) for f in feats]

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        g = self.cfg.num_global_views
        feats = [F.normalize(self.projection_head(self.backbone(v)), dim=1, p=2) for v in views]
        scores = [self.prototypes(f, self._step) for f in feats]
        queue = self._queue_scores(feats[:g])
        with torch.autocast(views[0].device.type, enabled=False):
            loss = self.criterion(
                [s.float() for s in scores[:g]],
                [s.float() for s in scores[g:]],
                None if queue is None else [s.float() for s in queue],
            )
        return StepOutput(loss.squeeze(), {"z_std": embedding_std(feats[0])})


def _dino_projection_head(in_dim: int, cfg) -> Callable[[], DINOProjectionHead]:
    """A maker of lightly's ``DINOProjectionHead`` with the config's sizes and last-layer settings (whole
    epochs of freezing only, as lightly counts them)."""
    freeze = math.ceil(cfg.freeze_last_layer_epochs)
    _require(freeze == cfg.freeze_last_layer_epochs, "freezing the last layer for a fraction of an epoch")

    def head() -> DINOProjectionHead:
        with warnings.catch_warnings():  # torch.nn.utils.weight_norm is deprecated (lightly still uses it)
            warnings.simplefilter("ignore", FutureWarning)
            return DINOProjectionHead(
                in_dim,
                cfg.hidden_dim,
                cfg.bottleneck_dim,
                cfg.out_dim,
                batch_norm=cfg.use_bn,
                freeze_last_layer=freeze,
                norm_last_layer=cfg.norm_last_layer,
            )

    return head


class _LightlyDistillation(LightlyMethod):
    """DINO, iBOT and DINOv2 alike: the teacher backbone is evaluated, its EMA (cosine momentum schedule) covers
    the backbone and ``_heads()`` (the student head and its teacher)."""

    @property
    def encoder(self) -> nn.Module:
        return self.teacher_backbone

    def _heads(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.student_head, self.teacher_head)]

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.teacher_backbone), *self._heads()]

    def ema_momentum(self, progress: Progress) -> float:
        return cosine_momentum(self.cfg.momentum, self.cfg.momentum_end, progress)


class LightlyDINO(_LightlyDistillation):
    """examples/pytorch/dino.py: ``DINOProjectionHead`` (student and teacher), teacher on the global
    crops, student on every crop, ``DINOLoss(..., epoch=)`` with the preset's temperature schedule
    and center momentum, ``cancel_last_layer_gradients`` for the first epochs; the teacher backbone
    is evaluated (as selfsup's DINO)."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        super().__init__(backbone, cfg)
        _require(cfg.head_layers == 3, f"a {cfg.head_layers}-layer DINO head (DINOProjectionHead has 3)")
        head = _dino_projection_head(backbone.num_features, cfg)

        self.student_head = head()
        self.teacher_backbone = _momentum_copy(self.backbone)
        self.teacher_head = head()  # weight-normed (old hook API): no deepcopy, as lightly's example
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(
            output_dim=cfg.out_dim,
            warmup_teacher_temp=cfg.warmup_teacher_temp,
            teacher_temp=cfg.teacher_temp,
            warmup_teacher_temp_epochs=cfg.warmup_teacher_temp_epochs,
            student_temp=cfg.student_temp,
            center_momentum=cfg.center_momentum,
        )
        self._epoch = 0

    def on_step(self, progress: Progress) -> None:
        self._epoch = int(progress.epoch)

    def after_backward(self, progress: Progress) -> None:
        self.student_head.cancel_last_layer_gradients(current_epoch=int(progress.epoch))

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        g = self.cfg.num_global_views
        with torch.no_grad():
            teacher = [self.teacher_head(self.teacher_backbone(v)) for v in views[:g]]
        student = [self.student_head(self.backbone(v)) for v in views]
        with torch.autocast(views[0].device.type, enabled=False):
            loss = self.criterion([t.float() for t in teacher], [s.float() for s in student], epoch=self._epoch)
        return StepOutput(loss, {"z_std": embedding_std(student[0])})


def _require_vit(backbone: nn.Module, method: str) -> None:
    if not isinstance(backbone, VisionTransformer):
        raise ValueError(
            f"{method} masks patch tokens: it needs a ViT backbone (vit_...), got {type(backbone).__name__}"
        )


def _teacher_vit(backbone: nn.Module) -> nn.Module:
    """``_momentum_copy`` without stochastic depth: lightly's examples build the teacher ViT without drop path
    and set the rate on the student's copy only (``update_drop_path_rate``), as selfsup's teacher has none."""
    teacher = _momentum_copy(backbone)
    for m in teacher.modules():
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0
    return teacher


def _weight_normed(build):
    """A lightly DINO head (``torch.nn.utils.weight_norm``, deprecated: its warning is silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return build()


def _teacher_head(student: nn.Module, build) -> nn.Module:
    """The teacher's copy of a weight-normed head: built anew and loaded (no deepcopy, as ``LightlyDINO``)."""
    teacher = _weight_normed(build)
    teacher.load_state_dict(student.state_dict())
    deactivate_requires_grad(teacher)
    return teacher


def _patch_loss(
    criterion: IBOTPatchLoss,
    teacher: torch.Tensor,
    student: torch.Tensor,
    masks: torch.Tensor,
    grid: tuple[int, int],
    teacher_temp: float,
) -> torch.Tensor:
    """``IBOTPatchLoss`` in float32 on the teacher's and student's outputs ``(M, K)`` at the masked patches of
    the ``(B, h * w)`` masks (given as lightly's ``(B, h, w)``); 0 and no center update when nothing is masked
    (the center's batch mean would be over no rows: NaN)."""
    if not masks.any():
        return student.float().sum() * 0.0
    with torch.autocast(student.device.type, enabled=False):
        return criterion(teacher.float(), student.float(), masks.view(-1, *grid), teacher_temp=teacher_temp)


class LightlyIBOT(_LightlyDistillation):
    """examples/pytorch/ibot.py and benchmarks/imagenet/vitb16/ibot.py: one ``DINOProjectionHead`` for the [CLS]
    and the masked patch tokens (the student's, and the teacher's EMA copy), the teacher on the unmasked global
    crops, the student on the masked global crops (all tokens) and the local crops ([CLS] only),
    ``lambda1 * DINOLoss + lambda2 * IBOTPatchLoss`` (lightly/loss/dino_loss.py, lightly/loss/ibot_loss.py): the
    [CLS] term over (teacher global crop, other student crop) pairs with ``DINOLoss``'s temperature warm-up
    (``epoch=``) and center momentum, the patch term on the masked patches of each global crop against the
    teacher's outputs there, with the config's patch temperature schedule and ``center_momentum2``;
    ``cancel_last_layer_gradients`` for the first epochs. The masks (iBOT's ``ibot_masks``, per global crop,
    none before ``pred_start_epoch``), the mask token ``(1, D)`` (weight-decayed, as the official one) and the
    masked forward are selfsup's; the teacher backbone is evaluated (as selfsup's iBOT)."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        _require_vit(backbone, "iBOT")
        super().__init__(backbone, cfg)
        _require(cfg.head_layers == 3, f"a {cfg.head_layers}-layer iBOT head (DINOProjectionHead has 3)")
        _require(cfg.shared_head, "iBOT's separate patch output layer (shared_head=false): lightly has no iBOT head")
        head = _dino_projection_head(backbone.num_features, cfg)

        self.student_head = _weight_normed(head)
        self.teacher_backbone = _teacher_vit(self.backbone)
        self.teacher_head = _teacher_head(self.student_head, head)
        self.mask_token = nn.Parameter(torch.zeros(1, backbone.embed_dim))
        self.cls_criterion = DINOLoss(
            output_dim=cfg.out_dim,
            warmup_teacher_temp=cfg.warmup_teacher_temp,
            teacher_temp=cfg.teacher_temp,
            warmup_teacher_temp_epochs=cfg.warmup_teacher_temp_epochs,
            student_temp=cfg.student_temp,
            center_momentum=cfg.center_momentum,
        )
        self.patch_criterion = IBOTPatchLoss(
            output_dim=cfg.out_dim,
            teacher_temp=cfg.teacher_patch_temp,
            student_temp=cfg.student_temp,
            center_momentum=cfg.center_momentum2,
        )
        self._epoch = 0
        self._patch_temp = patch_temperature(0, cfg)
        self._rng = step_rng(0, 0, 0)

    def on_step(self, progress: Progress) -> None:
        self._epoch = int(progress.epoch)
        self._patch_temp = patch_temperature(self._epoch, self.cfg)
        self._rng = step_rng(progress.seed, progress.step, dist.rank())

    def after_backward(self, progress: Progress) -> None:
        self.student_head.cancel_last_layer_gradients(current_epoch=int(progress.epoch))

    draw_masks = IBOT.draw_masks  # selfsup's masks (cfg, _epoch, _rng): the same draws by construction

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        c, g = self.cfg, self.cfg.num_global_views
        if len(views) < max(2, g) or any(v.shape != views[0].shape for v in views[1:g]):
            raise ValueError(f"iBOT needs at least {max(2, g)} views, the first {g} (global) of one size")
        n, prefix = views[0].shape[0], self.backbone.num_prefix_tokens
        p = self.backbone.patch_embed.patch_size
        grid = (views[0].shape[-2] // p[0], views[0].shape[-1] // p[1])
        masks = torch.cat([self.draw_masks(n, grid, views[0].device) for _ in range(g)])  # (g * n, N), crop-major
        glob = torch.cat(views[:g])
        with torch.no_grad():
            t_tokens = self.teacher_backbone.forward_features(glob)
            teacher = self.teacher_head(t_tokens[:, 0])
            teacher_patch = self.teacher_head(t_tokens[:, prefix:][masks])
        tokens = forward_mask_token(self.backbone, glob, masks, self.mask_token[0])
        cls = tokens[:, 0]
        if len(views) > g:
            cls = torch.cat([cls, multicrop_forward(self.backbone, views[g:])])
        student = self.student_head(cls)
        student_patch = self.student_head(tokens[:, prefix:][masks])
        with torch.autocast(views[0].device.type, enabled=False):
            cls_loss = self.cls_criterion(
                [t.float() for t in teacher.split(n)], [s.float() for s in student.split(n)], epoch=self._epoch
            )
        patch_loss = _patch_loss(self.patch_criterion, teacher_patch, student_patch, masks, grid, self._patch_temp)
        loss = c.lambda1 * cls_loss + c.lambda2 * patch_loss
        logs = {
            "z_std": embedding_std(student[:n]),
            "cls_loss": cls_loss.detach(),
            "patch_loss": patch_loss.detach(),
            "mask_ratio": masks.float().mean(),
        }
        return StepOutput(loss, logs)


class LightlyDINOv2(_LightlyDistillation):
    """examples/pytorch/dinov2.py and benchmarks/imagenet/vitb16/dinov2.py: ``DINOv2ProjectionHead`` for the
    [CLS] and the masked patch tokens (``ibot_separate_head``: a second one, of ``ibot_out_dim`` outputs, for the
    patches), the teacher's EMA copies, the teacher on the unmasked global crops, the student on the masked
    global crops (all tokens) and the local crops ([CLS] only); ``dino_loss_weight * DINOLoss +
    ibot_loss_weight * IBOTPatchLoss + koleo_loss_weight * sum of KoLeoLoss`` (lightly/loss/dino_loss.py,
    lightly/loss/ibot_loss.py, lightly/loss/koleo_loss.py): the [CLS] term over (teacher global crop, other
    student crop) pairs, the patch term at the masked patches, both with the benchmark's per-step teacher
    temperature warm-up (``linear_warmup_schedule``) and the config's center momentum, KoLeo on the student's
    backbone [CLS] of each global crop apart. The masks (DINOv2's ``batch_block_masks``: ``mask_probability``
    of the global crops, ratios in ``mask_ratio_min_max``), the mask token and the masked forward are selfsup's.

    Only the heads and losses (and the EMA bookkeeping) are lightly's: the optimizer's parameter groups are
    selfsup's ``layer_decay_groups`` (layer-wise lr decay, the patch embedding's multiplier, the mask token at
    layer 0, no decay on 1-D parameters) and ``clip_groups`` selfsup's (backbone with the mask token, each
    student head apart), so that the optimizer is the same as selfsup's DINOv2; the teacher backbone is
    evaluated."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        _require_vit(backbone, "DINOv2")
        super().__init__(backbone, cfg)
        _require(cfg.head_layers == 3, f"a {cfg.head_layers}-layer DINOv2 head (DINOv2ProjectionHead has 3)")
        _require(cfg.centering == "centering", f"centering {cfg.centering!r} (DINOLoss and IBOTPatchLoss: 'mean')")
        _require(not cfg.norm_last_layer, "a last layer of norm fixed to 1 (DINOv2ProjectionHead trains it)")

        def head(out_dim: int):
            return lambda: DINOv2ProjectionHead(
                backbone.num_features, cfg.hidden_dim, cfg.bottleneck_dim, out_dim, batch_norm=cfg.use_bn
            )

        self.student_head = _weight_normed(head(cfg.out_dim))
        self.teacher_backbone = _teacher_vit(self.backbone)
        self.teacher_head = _teacher_head(self.student_head, head(cfg.out_dim))
        patch_dim = cfg.out_dim
        if cfg.ibot_separate_head:
            patch_dim = cfg.ibot_out_dim
            self.student_ibot_head = _weight_normed(head(patch_dim))
            self.teacher_ibot_head = _teacher_head(self.student_ibot_head, head(patch_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, backbone.embed_dim))
        self.dino_criterion = DINOLoss(
            output_dim=cfg.out_dim, student_temp=cfg.student_temp, center_momentum=cfg.center_momentum
        )
        self.ibot_criterion = IBOTPatchLoss(
            output_dim=patch_dim, student_temp=cfg.student_temp, center_momentum=cfg.center_momentum
        )
        self.koleo_criterion = KoLeoLoss()
        self._teacher_temp = cfg.warmup_teacher_temp
        self._rng = step_rng(0, 0, 0)
        self._maskers: dict[tuple[int, int], BlockMasking] = {}

    def _heads(self) -> list[tuple[nn.Module, nn.Module]]:
        heads = [(self.student_head, self.teacher_head)]
        if self.cfg.ibot_separate_head:
            heads.append((self.student_ibot_head, self.teacher_ibot_head))
        return heads

    def param_groups(self) -> list[dict[str, Any]]:
        return layer_decay_groups(
            self,
            self.cfg.layer_decay,
            self.cfg.patch_embed_lr_mult,
            layer0=("mask_token",),
            exclude=self.exclude_bias_norm,
        )

    def clip_groups(self) -> list[list[nn.Parameter]]:
        return [[*self.backbone.parameters(), self.mask_token], *[list(s.parameters()) for s, _ in self._heads()]]

    def on_step(self, progress: Progress) -> None:
        c = self.cfg
        warmup = c.warmup_teacher_temp_epochs * progress.steps_per_epoch
        self._teacher_temp = linear_warmup_schedule(progress.step, warmup, c.warmup_teacher_temp, c.teacher_temp)
        self._rng = step_rng(progress.seed, progress.step, dist.rank())

    def after_backward(self, progress: Progress) -> None:
        if progress.epoch < self.cfg.freeze_last_layer_epochs:
            for student, _ in self._heads():
                for p in student.last_layer.parameters():
                    p.grad = None

    draw_masks = DINOv2.draw_masks  # selfsup's masks (cfg, _maskers, _rng): the same draws by construction

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        c, g = self.cfg, self.cfg.num_global_views
        if len(views) < max(2, g) or any(v.shape != views[0].shape for v in views[1:g]):
            raise ValueError(f"DINOv2 needs at least {max(2, g)} views, the first {g} (global) of one size")
        n, prefix = views[0].shape[0], self.backbone.num_prefix_tokens
        p = self.backbone.patch_embed.patch_size
        grid = (views[0].shape[-2] // p[0], views[0].shape[-1] // p[1])
        masks = self.draw_masks(g * n, grid, views[0].device)  # (g * n, N): the global crops, crop-major
        (student_head, teacher_head), (student_patch_head, teacher_patch_head) = self._heads()[0], self._heads()[-1]
        glob = torch.cat(views[:g])
        with torch.no_grad():
            t_tokens = self.teacher_backbone.forward_features(glob)
            teacher = teacher_head(t_tokens[:, 0])
            teacher_patch = teacher_patch_head(t_tokens[:, prefix:][masks])
        tokens = forward_mask_token(self.backbone, glob, masks, self.mask_token[0])
        cls_global = tokens[:, 0]
        cls = torch.cat([cls_global, multicrop_forward(self.backbone, views[g:])]) if len(views) > g else cls_global
        student = student_head(cls)
        student_patch = student_patch_head(tokens[:, prefix:][masks])
        with torch.autocast(views[0].device.type, enabled=False):
            dino = self.dino_criterion(
                [t.float() for t in teacher.split(n)],
                [s.float() for s in student.split(n)],
                teacher_temp=self._teacher_temp,
            )
        ibot = _patch_loss(self.ibot_criterion, teacher_patch, student_patch, masks, grid, self._teacher_temp)
        koleo = sum(_fp32(self.koleo_criterion, x) for x in cls_global.split(n))
        loss = c.dino_loss_weight * dino + c.ibot_loss_weight * ibot + c.koleo_loss_weight * koleo
        logs = {
            "z_std": embedding_std(student[:n]),
            "dino_loss": dino.detach(),
            "ibot_loss": ibot.detach(),
            "koleo_loss": koleo.detach(),
            "mask_ratio": masks.float().mean(),
        }
        return StepOutput(loss, logs)


class LightlyDCL(LightlyMethod):
    """examples/pytorch/dcl.py: ``SimCLRProjectionHead`` + ``DCLLoss(temperature)``, one pass per view;
    negatives gathered across processes (``gather_distributed``, as benchmarks/imagenet/resnet50/dcl.py)."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        super().__init__(backbone, cfg)
        _require(cfg.proj_last_bn, "DCL without BN on the projection output (proj_last_bn=false)")
        w = backbone.num_features
        self.projection_head = SimCLRProjectionHead(
            w, cfg.proj_hidden_dim or w, cfg.proj_out_dim, num_layers=cfg.proj_layers, batch_norm=True
        )
        self.criterion = self._criterion(cfg)

    def _criterion(self, cfg) -> nn.Module:
        return DCLLoss(temperature=cfg.temperature, gather_distributed=cfg.gather)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z0, z1 = (self.projection_head(self.backbone(v)) for v in views)
        with warnings.catch_warnings():  # DCLW's weights go through torch.tensor(tensor), which warns
            warnings.simplefilter("ignore", UserWarning)
            loss = _fp32(self.criterion, z0, z1)
        return StepOutput(loss, {"z_std": embedding_std(z0)})


class LightlyDCLW(LightlyDCL):
    """examples/pytorch/dcl.py with ``DCLWLoss(temperature, sigma)`` (the example's commented alternative)."""

    def _criterion(self, cfg) -> nn.Module:
        return DCLWLoss(temperature=cfg.temperature, sigma=cfg.sigma, gather_distributed=cfg.gather)


class LightlyTiCo(LightlyMethod):
    """examples/pytorch/tico.py: ``TiCoProjectionHead``, momentum copies, ``TiCoLoss(beta, rho)`` (gathered
    across processes, as benchmarks/imagenet/resnet50/tico.py) on the online projection of view 0 and the
    momentum projection of view 1."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        super().__init__(backbone, cfg)
        self.projection_head = TiCoProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.backbone_momentum = _momentum_copy(self.backbone)
        self.projection_head_momentum = _momentum_copy(self.projection_head)
        self.criterion = TiCoLoss(beta=cfg.beta, rho=cfg.rho, gather_distributed=cfg.gather)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.backbone_momentum), (self.projection_head, self.projection_head_momentum)]

    def ema_momentum(self, progress: Progress) -> float:
        return cosine_momentum(self.cfg.momentum, self.cfg.momentum_end, progress)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z0 = self.projection_head(self.backbone(views[0]))
        with torch.no_grad():
            z1 = self.projection_head_momentum(self.backbone_momentum(views[1]))
        return StepOutput(_fp32(self.criterion, z0, z1), {"z_std": embedding_std(z0)})


class LightlyMMCR(LightlyMethod):
    """examples/pytorch/mmcr.py: ``MMCRProjectionHead`` (no biases), momentum copies, ``MMCRLoss(lmda)`` on the
    ``(batch, k, dim)`` stacks of the online and momentum projections of every view, one pass per view; times
    the preset's ``loss_scale`` (lightly's loss has no such factor). Without a momentum encoder (the
    official CIFAR setting) the online projections stand in for lightly's momentum branch, which leaves the
    centroids (and their gradient) unchanged."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        super().__init__(backbone, cfg)
        _require(cfg.proj_layers >= 2, f"a {cfg.proj_layers}-layer MMCR projector (MMCRProjectionHead has 2 or more)")
        _require(
            cfg.momentum_encoder or cfg.lambd == 0, "MMCR's local nuclear norms (lambd > 0) without a momentum encoder"
        )
        self.projection_head = MMCRProjectionHead(
            backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim, num_layers=cfg.proj_layers - 1
        )
        if cfg.momentum_encoder:
            self.backbone_momentum = _momentum_copy(self.backbone)
            self.projection_head_momentum = _momentum_copy(self.projection_head)
        self.criterion = MMCRLoss(lmda=cfg.lambd)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        if not self.cfg.momentum_encoder:
            return []
        return [(self.backbone, self.backbone_momentum), (self.projection_head, self.projection_head_momentum)]

    def ema_momentum(self, progress: Progress) -> float:
        return self.cfg.momentum

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z_o = torch.stack([self.projection_head(self.backbone(v)) for v in views], dim=1)
        z_m = z_o
        if self.cfg.momentum_encoder:
            with torch.no_grad():
                z_m = torch.stack([self.projection_head_momentum(self.backbone_momentum(v)) for v in views], dim=1)
        loss = self.cfg.loss_scale * _fp32(self.criterion, z_o, z_m)
        return StepOutput(loss, {"z_std": embedding_std(z_o[:, 0])})


class LightlyVICReg(LightlyMethod):
    """examples/pytorch/vicreg.py: ``VICRegProjectionHead`` + ``VICRegLoss(lambda, mu, nu, eps)``, one pass per
    view; variance and covariance gathered across processes (``gather_distributed``, selfsup's ``gather``)."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        super().__init__(backbone, cfg)
        _require(cfg.gamma == 1.0, f"a target std of {cfg.gamma} (VICRegLoss's hinge is at 1)")
        _require(cfg.proj_layers >= 2, f"a {cfg.proj_layers}-layer VICReg expander (VICRegProjectionHead has 2+)")
        self.projection_head = VICRegProjectionHead(
            backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim, num_layers=cfg.proj_layers
        )
        self.criterion = VICRegLoss(
            lambda_param=cfg.sim_coeff,
            mu_param=cfg.std_coeff,
            nu_param=cfg.cov_coeff,
            gather_distributed=cfg.gather,
            eps=cfg.eps,
        )

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z0, z1 = (self.projection_head(self.backbone(v)) for v in views)
        return StepOutput(_fp32(self.criterion, z0, z1), {"z_std": embedding_std(z0)})


class LightlyNNCLR(LightlyMethod):
    """examples/pytorch/nnclr.py: ``NNCLRProjectionHead`` (3 layers, BN on the output),
    ``NNCLRPredictionHead``, ``NNMemoryBankModule`` of ``(queue_size, proj_out_dim)`` (looked up with view 0's
    projections before, view 1's with the update), ``NTXentLoss(temperature)`` (negatives gathered with
    selfsup's ``gather``), ``0.5 * (NTXent(NN(z0), p1) + NTXent(NN(z1), p0))`` on detached projections."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        super().__init__(backbone, cfg)
        _require(cfg.proj_layers == 3, f"a {cfg.proj_layers}-layer NNCLR projector (NNCLRProjectionHead has 3)")
        self.projection_head = NNCLRProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.prediction_head = NNCLRPredictionHead(cfg.proj_out_dim, cfg.pred_hidden_dim, cfg.proj_out_dim)
        self.memory_bank = NNMemoryBankModule(size=(cfg.queue_size, cfg.proj_out_dim))
        self.criterion = NTXentLoss(temperature=cfg.temperature, gather_distributed=cfg.gather)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z = [self.projection_head(self.backbone(v)) for v in views]
        p = [self.prediction_head(zi) for zi in z]
        nn0 = _fp32(self.memory_bank, z[0].detach(), update=False)
        nn1 = _fp32(self.memory_bank, z[1].detach(), update=True)
        loss = 0.5 * (_fp32(self.criterion, nn0, p[1]) + _fp32(self.criterion, nn1, p[0]))
        return StepOutput(loss, {"z_std": embedding_std(z[0])})


#: selfsup method name -> lightly's implementation (methods lightly has)
LIGHTLY: dict[str, type[Method]] = {
    "simclr": LightlySimCLR,
    "mocov2": LightlyMoCo,
    "byol": LightlyBYOL,
    "simsiam": LightlySimSiam,
    "barlowtwins": LightlyBarlowTwins,
    "swav": LightlySwAV,
    "dino": LightlyDINO,
    "ibot": LightlyIBOT,
    "dinov2": LightlyDINOv2,
    "dcl": LightlyDCL,
    "dclw": LightlyDCLW,
    "tico": LightlyTiCo,
    "mmcr": LightlyMMCR,
    "vicreg": LightlyVICReg,
    "nnclr": LightlyNNCLR,
}


def build_lightly(cfg: Config) -> Method:
    """lightly's implementation of ``cfg.method`` on the backbone selfsup builds for ``cfg`` (same seed,
    so the same initial backbone weights as ``selfsup.app.runs.build_from_config(cfg)``)."""
    if cfg.method.name not in LIGHTLY:
        raise KeyError(f"lightly has no implementation of {cfg.method.name!r}; it has: {', '.join(LIGHTLY)}")
    torch.manual_seed(cfg.train.seed)
    backbone = backbone_from_config(cfg.backbone)
    method = LIGHTLY[cfg.method.name](backbone, cfg.method)
    # the same optimizer groups as selfsup's method (MoCo, SimSiam and SwAV decay every parameter)
    method.exclude_bias_norm = getattr(METHODS.get(cfg.method.name), "exclude_bias_norm", True)
    return method
