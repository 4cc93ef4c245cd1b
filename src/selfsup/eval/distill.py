"""SimCLR v2 distillation: a fine-tuned teacher labels the unlabelled set for a student.

Chen, Kornblith, Swersky, Norouzi, Hinton. "Big Self-Supervised Models are Strong Semi-Supervised
Learners", NeurIPS 2020, arXiv:2006.10029, sec. 2, eq. (3): the student minimizes
``-sum_y P_T(y | x; tau) log P_S(y | x; tau)`` over unlabelled images, both distributions being
softmaxes of logits divided by the temperature ``tau``; the teacher is fixed and sees the same
augmented view as the student. Optionally the labelled cross-entropy is mixed in with weight
``labelled_weight`` (the paper's ``alpha``; it mostly uses distillation alone).

Defaults (ours, for a student trained from scratch): temperature 1, Nesterov SGD with base lr
0.1 x batch/256 and weight decay 1e-4, 100 epochs, cosine schedule, random resized crops and flips.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..data.dataset import EpochSampler, ViewDataset, collate
from .supervised import TrainSettings, evaluate, global_batch, train_network


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0):
    """SimCLR v2 eq. (3), averaged over the batch: cross-entropy of the student's tempered softmax
    against the teacher's. Logits ``(B, C)``; no gradient flows into the teacher."""
    target = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    return F.cross_entropy(student_logits.float() / temperature, target)


@dataclass
class DistillConfig(TrainSettings):
    """SimCLR v2 distillation; the optimization defaults are ours (see the module docstring)."""

    temperature: float = 1.0  # of both softmaxes
    labelled_weight: float = 0.0  # weight of the labelled cross-entropy, in [0, 1]; distillation gets 1 - it
    labelled_batch_size: int = 0  # 0: the unlabelled batch size
    epochs: int = 100
    lr: float = 0.1
    nesterov: bool = True
    weight_decay: float = 1e-4

    def __post_init__(self):
        super().__post_init__()
        if self.epochs < 1 or self.temperature <= 0 or not 0 <= self.labelled_weight <= 1:
            raise ValueError(
                f"distillation needs epochs >= 1, temperature > 0 and labelled_weight in [0, 1]; got "
                f"{self.epochs}, {self.temperature}, {self.labelled_weight}"
            )


def _cycle(dataset: ViewDataset, batch: int, cfg: DistillConfig):
    """Endless labelled batches (this rank's slice), a new seeded order every pass."""
    world = dist.world_size()
    sampler = EpochSampler(len(dataset), batch, seed=cfg.seed + 1, rank=dist.rank(), world=world)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch // world, sampler=sampler, collate_fn=collate, num_workers=cfg.num_workers
    )
    epoch = 0
    while True:
        sampler.set_position(epoch)
        yield from loader
        epoch += 1


def distill(
    teacher: nn.Module,
    student: nn.Module,
    unlabelled: ViewDataset,
    cfg: DistillConfig | None = None,
    labelled: ViewDataset | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Train a copy of ``student`` (images -> logits) on the teacher's soft labels; return it.

    ``unlabelled`` (its labels are ignored) and ``labelled`` carry the training augmentation. The
    teacher stays in eval mode. Under ``torchrun`` every rank must call this.
    """
    cfg = cfg or DistillConfig()
    device = torch.device(device) if device is not None else next(student.parameters()).device
    teacher = teacher.to(device).eval()
    student = copy.deepcopy(student)
    w = cfg.labelled_weight
    if w > 0 and labelled is None:
        raise ValueError("labelled_weight > 0 needs a labelled dataset")
    extra = None
    if labelled is not None and w > 0:
        lb = global_batch(len(labelled), cfg.labelled_batch_size or cfg.batch_size, dist.world_size())
        extra = _cycle(labelled, lb, cfg)

    def step_loss(net: nn.Module, x: torch.Tensor, _unused: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher(x)
        if extra is None:
            return distillation_loss(net(x), t, cfg.temperature)
        b = next(extra)
        xl, yl = b["views"][0].to(device, non_blocking=True), b["labels"].to(device)
        out = net(torch.cat([x, xl]))  # one forward: DDP and BatchNorm see one batch
        s, sl = out[: len(x)], out[len(x) :]
        return (1 - w) * distillation_loss(s, t, cfg.temperature) + w * F.cross_entropy(sl.float(), yl)

    return train_network(student, unlabelled, cfg, step_loss, device)


def distill_and_evaluate(teacher, student, unlabelled, test, cfg=None, labelled=None, device=None) -> dict:
    """:func:`distill`, then ``{"top1", "top5", "teacher_top1", "teacher_top5", "model"}`` on ``test``."""
    cfg = cfg or DistillConfig()
    model = distill(teacher, student, unlabelled, cfg, labelled, device)
    res = evaluate(model, test, num_workers=cfg.num_workers)
    t = evaluate(teacher, test, num_workers=cfg.num_workers)
    return {**res, "teacher_top1": t["top1"], "teacher_top5": t["top5"], "model": model}
