"""Exponential moving average of an online network into a target network (MoCo, BYOL, DINO)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def copy_as_target(online: nn.Module) -> nn.Module:
    """A frozen deep copy of ``online``: same weights, ``requires_grad=False``."""
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, momentum: float, buffers: bool = True) -> None:
    """``target = momentum * target + (1 - momentum) * online`` for parameters.

    With ``buffers`` the target's buffers (BN running statistics) are copied from the online network
    (used by BYOL and MoCo, whose targets' statistics are never used for evaluation); without, the
    target keeps its own (DINO's teacher, evaluated with the statistics of its global-crop passes).
    """
    op = [p.detach() for p in online.parameters()]
    tp = list(target.parameters())
    if len(op) != len(tp):
        raise ValueError("online and target networks have different parameter lists")
    if momentum < 1.0:
        torch._foreach_mul_(tp, momentum)
        torch._foreach_add_(tp, op, alpha=1.0 - momentum)
    if buffers:
        for ob, tb in zip(online.buffers(), target.buffers()):
            tb.copy_(ob)
