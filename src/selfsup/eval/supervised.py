"""What the supervised protocols (linear probe, fine-tuning, distillation) share.

The training augmentation, a linear head initialized as in MoCo v3 / DINO, a classifier that puts
optional extra layers (SimCLR v2's projection-head layer) and a head on any encoder, the optimizer
with its per-step cosine schedule, one training loop for whole networks (DDP with global BatchNorm
under ``torchrun``), and top-k accuracy of logits gathered over ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from .. import dist
from ..config import OptimConfig
from ..data.dataset import EpochSampler, ViewDataset, warn_skipped
from ..errors import NonFiniteLossError
from ..methods.base import split_decay_groups
from ..precision import autocast
from ..train import engine
from ..train.optim import build_optimizer as build_train_optimizer
from ..train.optim import build_schedule, scaled_lr
from .features import extract_features


@dataclass
class TrainSettings:
    """Optimization of a supervised protocol. ``lr`` is the base rate, scaled by ``batch / 256``."""

    epochs: int = 90  # passes over the training set
    batch_size: int = 256  # global batch, split over ranks
    lr: float = 0.1  # base learning rate, x batch/256
    optimizer: Literal["sgd", "lars"] = "sgd"  # lars for large batches
    momentum: float = 0.9  # SGD / LARS momentum
    nesterov: bool = False  # Nesterov momentum
    weight_decay: float = 0.0  # on weights, not on biases and norms
    warmup_epochs: float = 0.0  # linear warm-up before the cosine schedule
    seed: int = 0  # data order, augmentation and head initialization
    num_workers: int = 0  # DataLoader worker processes

    def optim_config(self) -> OptimConfig:
        """These settings as the training loop's optimizer config (linear lr scaling, cosine to 0)."""
        return OptimConfig(
            name=self.optimizer,
            lr=self.lr,
            lr_scaling="linear",
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            nesterov=self.nesterov,
            warmup_epochs=self.warmup_epochs,
        )

    def __post_init__(self):
        bad = [
            f"{name} {getattr(self, name)!r}"
            for name, ok in (
                ("epochs", self.epochs >= 0),
                ("batch_size", self.batch_size >= 1),
                ("lr", self.lr > 0),
                ("momentum", self.momentum >= 0),
                ("weight_decay", self.weight_decay >= 0),
                ("warmup_epochs", self.warmup_epochs >= 0),
                ("num_workers", self.num_workers >= 0),
            )
            if not ok
        ]
        if bad:
            raise ValueError(f"{type(self).__name__}: invalid {', '.join(bad)}")


def train_transform(size: int, mean, std, scale: tuple[float, float] = (0.08, 1.0)) -> T.Compose:
    """Random resized crop and horizontal flip: the augmentation of linear probes and fine-tuning."""
    return T.Compose(
        [
            T.PILToTensor(),
            T.RandomResizedCrop(size, scale=scale, interpolation=InterpolationMode.BICUBIC, antialias=True),
            T.RandomHorizontalFlip(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean, std),
        ]
    )


def linear_head(in_dim: int, num_classes: int, bn: bool = False, seed: int | None = None) -> nn.Sequential:
    """``[BatchNorm1d(affine=False)] -> Linear`` with weights ~ N(0, 0.01) and zero bias.

    The parameter-free BatchNorm (MoCo v3, MAE) makes the probe insensitive to the feature scale.
    With ``seed``, initialization does not touch the global random state.
    """
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        fc = nn.Linear(in_dim, num_classes)
        nn.init.normal_(fc.weight, std=0.01)
        nn.init.zeros_(fc.bias)
    return nn.Sequential(*([nn.BatchNorm1d(in_dim, affine=False)] if bn else []), fc)


def _out_dim(module: nn.Module, in_dim: int) -> int:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1].out_features
    was = module.training
    module.eval()
    with torch.no_grad():
        dim = module(torch.zeros(2, in_dim, device=next(module.parameters(), torch.zeros(0)).device)).shape[1]
    module.train(was)
    return dim


class Classifier(nn.Module):
    """``encoder -> extra -> linear`` for any encoder with ``num_features``.

    ``extra`` holds layers between the encoder and the linear layer: SimCLR v2 fine-tunes from the
    first layer of its projection head (see :func:`selfsup.eval.finetune.projection_head_layers`).
    """

    def __init__(
        self, encoder: nn.Module, num_classes: int, extra: nn.Module | None = None, bn: bool = False, seed: int = 0
    ):
        super().__init__()
        self.encoder = encoder
        self.extra = extra if extra is not None else nn.Identity()
        in_dim = encoder.num_features if extra is None else _out_dim(extra, encoder.num_features)
        self.head = linear_head(in_dim, num_classes, bn, seed)

    @property
    def num_classes(self) -> int:
        return self.head[-1].out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.extra(self.encoder(x)))


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``{"top1", "top5"}`` fractions (top-5 is top-C when there are fewer than 5 classes)."""
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hit = top == labels.unsqueeze(1)
    return {"top1": hit[:, 0].float().mean().item(), "top5": hit.any(1).float().mean().item()}


def evaluate(model: nn.Module, test: ViewDataset, batch_size: int = 256, num_workers: int = 0) -> dict[str, float]:
    """Top-1/top-5 of ``model``'s logits on ``test`` (eval mode; sharded over ranks, same on all)."""
    logits, labels = extract_features(
        model, test, batch_size, num_workers=num_workers, normalize=False, distributed=True, desc="evaluate"
    )
    return topk_accuracy(logits, labels)


def global_batch(n: int, batch_size: int, world: int = 1) -> int:
    """``batch_size``, or all of a smaller dataset, rounded down to a multiple of the world size."""
    b = min(batch_size, n)
    b -= b % world
    if b < 1:
        raise ValueError(f"{n} training images cannot be split over {world} processes")
    return b


def build_optimizer(groups: list[dict], s: TrainSettings, batch: int, total_steps: int, steps_per_epoch: int):
    """The optimizer and its per-step schedule (linear warm-up, then cosine to 0): the training loop's
    own (:func:`selfsup.train.optim.build_optimizer`) from the :class:`OptimConfig` the settings
    describe, so LARS, SGD and the schedule are one implementation."""
    cfg = s.optim_config()
    peak = scaled_lr(cfg, batch)
    return build_train_optimizer(groups, cfg, peak), build_schedule(cfg, peak, total_steps, steps_per_epoch)


def rank_loader(dataset: ViewDataset, batch: int, s: TrainSettings, device: torch.device):
    """This rank's slice of each global batch (:class:`EpochSampler`: seeded order and augmentation,
    drop-last), so the gathered global batch is the same whatever the number of ranks."""
    world = dist.world_size()
    sampler = EpochSampler(len(dataset), batch, seed=s.seed, rank=dist.rank(), world=world)
    return sampler, engine.rank_loader(dataset, sampler, batch // world, s.num_workers, device, s.seed)


def train_network(
    model: nn.Module,
    dataset: ViewDataset,
    s: TrainSettings,
    step_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
) -> nn.Module:
    """Train every parameter of ``model`` on ``dataset`` with ``step_loss(model, images, labels)``.

    Under ``torchrun`` the model is wrapped in DDP and BatchNorm becomes global (SyncBatchNorm, as
    SimCLR fine-tunes), so a step equals the one-process step on the whole global batch. Returns
    the trained model (the converted one under DDP, with the same state-dict keys).
    """
    world = dist.world_size()
    batch = global_batch(len(dataset), s.batch_size, world)
    model, net = engine.wrap_model(model, device, sync_bn=True)
    sampler, loader = rank_loader(dataset, batch, s, device)
    total = sampler.steps_per_epoch * s.epochs
    groups = split_decay_groups(model.named_parameters())
    opt, schedule = build_optimizer(groups, s, batch, total, sampler.steps_per_epoch)
    bf16 = autocast(device)
    model.train()
    step, seen = 0, set()
    for epoch in range(s.epochs):
        sampler.set_position(epoch)
        bad = torch.zeros((), dtype=torch.bool, device=device)
        for b in loader:
            warn_skipped(b["skipped"], seen)
            schedule.apply(opt, step)
            with bf16:
                loss = step_loss(net, b["views"][0].to(device, non_blocking=True), b["labels"].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bad |= ~torch.isfinite(loss.detach())
            step += 1
        if bool(bad):
            raise NonFiniteLossError(f"non-finite loss in epoch {epoch}; lower the learning rate")
    model.eval()
    return model


__all__ = [
    "Classifier",
    "TrainSettings",
    "build_optimizer",
    "evaluate",
    "global_batch",
    "linear_head",
    "rank_loader",
    "topk_accuracy",
    "train_network",
    "train_transform",
]
