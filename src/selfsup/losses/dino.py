"""DINO's self-distillation loss (Caron et al. 2021, arXiv:2104.14294; official ``main_dino.py``
``DINOLoss``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..precision import fp32


@fp32
def dino_loss(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    center: torch.Tensor,
    teacher_temp: float,
    student_temp: float,
) -> torch.Tensor:
    """Mean over pairs (teacher view i, student view v != i) of the batch-mean cross-entropy
    ``-sum softmax((t_i - center) / teacher_temp) * log_softmax(s_v / student_temp)``.

    ``student``: one ``(B, K)`` logit tensor per view; ``teacher``: one per global view (views 0, 1,
    ...), no gradient flows into it; ``center``: ``(1, K)``.
    """
    targets = [F.softmax((t.detach().float() - center) / teacher_temp, dim=-1) for t in teacher]
    return cross_view_loss(student, targets, student_temp)


@fp32
def cross_view_loss(student: list[torch.Tensor], targets: list[torch.Tensor], student_temp: float) -> torch.Tensor:
    """Mean over pairs (target view i, student view v != i) of the batch-mean cross-entropy
    ``-sum targets[i] * log_softmax(student[v] / student_temp)``; ``targets`` are distributions (the
    teacher's centred or Sinkhorn-normalized outputs, no gradient), one per global view."""
    logp = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student]
    terms = [
        -(q.detach().float() * logp[v]).sum(dim=-1).mean()
        for i, q in enumerate(targets)
        for v in range(len(logp))
        if v != i
    ]
    return torch.stack(terms).mean()
