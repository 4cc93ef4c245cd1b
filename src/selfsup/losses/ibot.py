"""The masked-patch self-distillation loss of iBOT (Zhou et al. 2021, arXiv:2111.07832; bytedance/ibot
``main_ibot.py`` ``iBOTLoss``, lines 538-555) and DINOv2 (Oquab et al. 2023, arXiv:2304.07193;
facebookresearch/dinov2 ``dinov2/loss/ibot_patch_loss.py`` ``forward_masked``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..precision import fp32


def masked_patch_weights(masks: torch.Tensor) -> torch.Tensor:
    """``(M,)`` weights of the masked patches of ``masks`` ``(B, N)`` (bool), in ``masks[masks]`` order:
    ``1 / (masked patches of its image) / B``. A weighted sum of per-patch losses is then the mean over all
    ``B`` images (an image without masked patches counts as 0) of its mean over its masked patches: iBOT's
    ``sum(loss * mask) / mask.sum().clamp(min=1)`` averaged over the batch, DINOv2's ``masks_weight``."""
    count = masks.sum(dim=-1, keepdim=True).clamp(min=1).float()
    return (1.0 / count / masks.shape[0]).expand_as(masks)[masks]


@fp32
def patch_distillation_loss(
    student: torch.Tensor, teacher_probs: torch.Tensor, weights: torch.Tensor, student_temp: float
) -> torch.Tensor:
    """``sum_m weights[m] * CE(teacher_probs[m], softmax(student[m] / student_temp))`` over the masked patches:
    ``student`` logits and ``teacher_probs`` (already centred and sharpened, no gradient) ``(M, K)``."""
    ce = -(teacher_probs.detach().float() * F.log_softmax(student.float() / student_temp, dim=-1)).sum(dim=-1)
    return (ce * weights).sum()
