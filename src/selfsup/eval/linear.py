"""Linear probe: a linear classifier trained on the frozen encoder's features.

The standard protocol (MoCo v3 ``main_lincls.py``, Chen, Xie, He 2021, arXiv:2104.02057; MAE's
``main_linprobe.py``, He et al. 2021, arXiv:2111.06377): the backbone in eval mode, a linear layer
(optionally preceded by ``BatchNorm1d(affine=False)``, as in MoCo v3 for ViTs and MAE) trained with
SGD (momentum 0.9, base lr 0.1 x batch/256, no weight decay, 90 epochs, cosine schedule) or LARS for
large batches, on random resized crops with flips; evaluated on centre crops.

The fast variant trains the same head on features computed once from centre crops (no
augmentation): minutes on a CPU instead of hours, and what quick sweeps need. Both variants draw
batches in the same seeded order and start from the same seeded head, so on the same features
(the standard variant fed centre crops) they produce the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..data.dataset import EpochSampler, ViewDataset, warn_skipped
from ..errors import NonFiniteLossError
from ..methods.base import split_decay_groups
from ..precision import autocast
from .features import extract_features
from .supervised import TrainSettings, build_optimizer, global_batch, linear_head, rank_loader, topk_accuracy


@dataclass
class LinearConfig(TrainSettings):
    """MoCo v3's linear-probe recipe (SGD, base lr 0.1, no weight decay, 90 epochs, cosine)."""

    bn: bool = False  # BatchNorm1d(affine=False) before the linear layer (MoCo v3 ViT, MAE)
    extract_batch_size: int = 256  # images per forward pass when extracting features

    def __post_init__(self):
        super().__post_init__()
        if self.epochs < 1 or self.extract_batch_size < 1:
            raise ValueError(
                f"LinearConfig: epochs ({self.epochs}) and extract_batch_size ({self.extract_batch_size}) must be >= 1"
            )


Batches = Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]


def _fit_head(head: nn.Module, batches: Batches, steps_per_epoch: int, batch: int, cfg: LinearConfig) -> nn.Module:
    """The loop both variants share: ``batches(epoch)`` yields global batches of (features, labels)."""
    total = steps_per_epoch * cfg.epochs
    opt, schedule = build_optimizer(split_decay_groups(head.named_parameters()), cfg, batch, total, steps_per_epoch)
    head.train()
    step = 0
    for epoch in range(cfg.epochs):
        for f, y in batches(epoch):
            schedule.apply(opt, step)
            loss = F.cross_entropy(head(f), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"linear probe: non-finite loss in epoch {epoch}; lower the learning rate")
    head.eval()
    return head


def train_linear(features: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: LinearConfig) -> nn.Module:
    """The fast variant: a head trained on precomputed ``features`` ``(N, D)`` (on their device).

    Every rank holding the same features computes the same head, so it needs no communication.
    """
    batch = global_batch(len(features), cfg.batch_size)
    head = linear_head(features.shape[1], num_classes, cfg.bn, cfg.seed).to(features.device)
    sampler = EpochSampler(len(features), batch, seed=cfg.seed)

    def batches(epoch: int):
        sampler.set_position(epoch)
        order = torch.tensor([i for i, _ in sampler], device=features.device)
        for idx in order.split(batch):
            yield features[idx], labels[idx]

    return _fit_head(head, batches, sampler.steps_per_epoch, batch, cfg)


@torch.no_grad()
def _frozen(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with autocast(x.device):
        return encoder(x).float()


def train_linear_augmented(
    encoder: nn.Module, train: ViewDataset, num_classes: int, cfg: LinearConfig, device: torch.device
) -> nn.Module:
    """The standard variant: features of ``train``'s (augmented) views computed each step.

    The encoder runs in eval mode without gradients (its mode is restored). Each rank encodes its
    slice of the global batch; the slices are gathered so every rank trains the same head on the
    whole global batch (a linear layer costs nothing next to the encoder).
    """
    world = dist.world_size()
    batch = global_batch(len(train), cfg.batch_size, world)
    head = linear_head(encoder.num_features, num_classes, cfg.bn, cfg.seed).to(device)
    sampler, loader = rank_loader(train, batch, cfg, device)
    seen: set[str] = set()

    def batches(epoch: int):
        sampler.set_position(epoch)
        for b in loader:
            warn_skipped(b["skipped"], seen)
            f = _frozen(encoder, b["views"][0].to(device, non_blocking=True))
            yield dist.gather_no_grad(f), dist.gather_no_grad(b["labels"].to(device))

    was_training = encoder.training
    encoder.eval()
    try:
        return _fit_head(head, batches, sampler.steps_per_epoch, batch, cfg)
    finally:
        encoder.train(was_training)


def linear_probe(
    encoder: nn.Module,
    train: ViewDataset,
    test: ViewDataset,
    num_classes: int,
    cfg: LinearConfig | None = None,
    augment: bool = False,
    device: torch.device | str | None = None,
) -> dict:
    """Train a linear probe on ``train`` and return ``{"top1", "top5", "head"}`` on ``test``.

    ``train``'s transform is what the head sees: centre crops for the fast variant
    (``augment=False``: features extracted once), random resized crops and flips for the standard
    one (``augment=True``, see :func:`~selfsup.eval.supervised.train_transform`). The encoder is
    left untouched (eval mode, no gradients); its train/eval mode is restored. Under ``torchrun``
    every rank must call this; all get the same head.
    """
    cfg = cfg or LinearConfig()
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    encoder.to(device)
    was_training = encoder.training
    encoder.eval()
    try:
        if augment:
            head = train_linear_augmented(encoder, train, num_classes, cfg, device)
        else:
            f, y = extract_features(
                encoder, train, cfg.extract_batch_size, device, cfg.num_workers, normalize=False, distributed=True
            )
            head = train_linear(f, y, num_classes, cfg)
        tf, ty = extract_features(
            encoder, test, cfg.extract_batch_size, device, cfg.num_workers, normalize=False, distributed=True
        )
        with torch.no_grad():
            res = topk_accuracy(head(tf), ty)
    finally:
        encoder.train(was_training)
    return {**res, "head": head}
