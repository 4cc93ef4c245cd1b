"""Optimizers (SGD, LARS, AdamW) and the per-step learning-rate / weight-decay schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import OptimConfig


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017, arXiv:1708.03888) as in SimCLR's code.

    For each parameter ``w`` with gradient ``g`` (plus weight decay ``wd * w``), the update is
    ``v = m * v + lr * trust * g`` and ``w -= v`` with ``trust = eta * ||w|| / ||g||``
    (1 when either norm is 0). Groups marked ``lars_exclude`` (biases and norm parameters, as in
    SimCLR and BYOL) get neither adaptation nor weight decay.

    ``clip=True`` is apex LARC's clip mode (solo-learn's ``clip_lr``): the rate is capped at the
    scheduled one, ``v = m * v + min(lr, trust) * g``, so a step moves a layer by at most
    ``eta * ||w||`` and by plain SGD's ``lr * ||g||`` when that is smaller.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        clip: bool = False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            clip=clip,
            lars_exclude=False,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            exclude = group["lars_exclude"]
            if group["weight_decay"] and not exclude:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            if not exclude:
                w_norm = torch.stack(torch._foreach_norm(params))
                g_norm = torch.stack(torch._foreach_norm(grads))
                trust = torch.where(
                    (w_norm > 0) & (g_norm > 0), group["trust_coefficient"] * w_norm / g_norm, torch.ones_like(w_norm)
                )
                if group.get("clip") and group["lr"] > 0:  # lr * min(trust / lr, 1) = min(trust, lr)
                    trust = torch.clamp(trust / group["lr"], max=1.0)
                grads = torch._foreach_mul(grads, list(trust.unbind()))
            bufs = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads, alpha=group["lr"])
            torch._foreach_sub_(params, bufs)
        return loss


def scaled_lr(cfg: OptimConfig, batch_size: int) -> float:
    """Peak learning rate: ``lr * bs / 256`` (linear), ``lr * sqrt(bs)`` (sqrt, SimCLR's rule for
    small batches) or ``lr`` (none)."""
    if cfg.lr_scaling == "linear":
        return cfg.lr * batch_size / 256
    if cfg.lr_scaling == "sqrt":
        return cfg.lr * math.sqrt(batch_size)
    return cfg.lr


def build_optimizer(
    groups: list[dict[str, Any]], cfg: OptimConfig, lr: float, device: torch.device | None = None
) -> torch.optim.Optimizer:
    """Optimizer over a method's parameter groups. Groups without an explicit ``weight_decay``
    follow the weight-decay schedule; the others keep theirs (0 for biases and norms). A group may
    set ``lr_scale`` (a multiple of the scheduled rate) or ``fixed_lr`` (stay at the peak rate, as
    SimSiam's predictor)."""
    for g in groups:
        g["wd_scheduled"] = "weight_decay" not in g
        g.setdefault("weight_decay", cfg.weight_decay)
        g.setdefault("lars_exclude", False)
        g["peak_lr"] = lr
    fused = device is not None and device.type == "cuda"
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, trust_coefficient=cfg.trust_coefficient, clip=cfg.lars_clip)
    if cfg.name == "sgd":
        nesterov = cfg.nesterov and cfg.momentum > 0
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=cfg.momentum,
            nesterov=nesterov,
            fused=fused or None,
            foreach=None if fused else True,
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, fused=fused or None, foreach=None if fused else True)
    raise ValueError(f"optim.name: unknown optimizer {cfg.name!r}; expected lars, sgd or adamw")


@dataclass
class Schedule:
    """Per-step values, precomputed once and indexed by the global step (as in DINO)."""

    lr: np.ndarray
    weight_decay: np.ndarray

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        lr, wd = float(self.lr[step]), float(self.weight_decay[step])
        for g in optimizer.param_groups:
            g["lr"] = (g["peak_lr"] if g.get("fixed_lr") else lr) * g.get("lr_scale", 1.0)
            if g["wd_scheduled"]:
                g["weight_decay"] = wd


def cosine_schedule(
    peak: float, final: float, total_steps: int, warmup_steps: int = 0, start: float = 0.0
) -> np.ndarray:
    """Linear warm-up from ``start`` to ``peak`` over ``warmup_steps``, then cosine to ``final``."""
    warm = np.linspace(start, peak, warmup_steps, endpoint=False) if warmup_steps > 0 else np.array([])
    t = np.arange(total_steps - warmup_steps) / max(1, total_steps - warmup_steps)
    cos = final + 0.5 * (peak - final) * (1 + np.cos(np.pi * t))
    return np.concatenate([warm, cos])[:total_steps]


def step_schedule(
    peak: float, total_steps: int, milestones: list[int], gamma: float, warmup_steps: int = 0, start: float = 0.0
) -> np.ndarray:
    """Linear warm-up, then ``peak * gamma ** (number of milestones passed)`` (MoCo v1's schedule:
    ``lr * 0.1 ** sum(epoch >= m for m in (120, 160))``)."""
    steps = np.arange(total_steps)
    lr = peak * gamma ** np.searchsorted(np.sort(np.asarray(milestones)), steps, side="right")
    if warmup_steps > 0:
        lr[:warmup_steps] = np.linspace(start, peak, warmup_steps, endpoint=False)[: len(lr)]
    return lr.astype(np.float64)


def build_schedule(cfg: OptimConfig, peak_lr: float, total_steps: int, steps_per_epoch: int) -> Schedule:
    warmup = min(total_steps, int(round(cfg.warmup_epochs * steps_per_epoch)))
    if cfg.schedule == "step":
        milestones = [int(round(m * steps_per_epoch)) for m in cfg.lr_milestones]
        lr = step_schedule(peak_lr, total_steps, milestones, cfg.lr_gamma, warmup, start=cfg.warmup_start_lr)
    else:
        lr = cosine_schedule(peak_lr, cfg.min_lr, total_steps, warmup, start=cfg.warmup_start_lr)
    wd_end = cfg.weight_decay if cfg.weight_decay_end is None else cfg.weight_decay_end
    wd = cosine_schedule(cfg.weight_decay, wd_end, total_steps)
    return Schedule(lr, wd)


def clip_grad(model: nn.Module, max_norm: float, mode: str = "global") -> None:
    """Clip gradients to ``max_norm`` (0: off). ``global``: the norm over all parameters together
    (torch's ``clip_grad_norm_``). ``per_param``: each parameter's gradient on its own, as DINO's
    ``utils.clip_gradients``: ``g *= min(1, max_norm / (||g|| + 1e-6))``. ``per_module``: the norm over each
    of the model's ``clip_groups()`` apart (DINOv2 clips its backbone and heads each to 3.0)."""
    if max_norm <= 0:
        return
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return
    if mode == "global":
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    elif mode == "per_module":
        groups = model.clip_groups() if hasattr(model, "clip_groups") else [params]
        for group in groups:
            with_grad = [p for p in group if p.grad is not None]
            if with_grad:
                torch.nn.utils.clip_grad_norm_(with_grad, max_norm)
    elif mode == "per_param":
        grads = [p.grad for p in params]
        norms = torch.stack(torch._foreach_norm(grads))
        scale = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
        torch._foreach_mul_(grads, list(scale.unbind()))
    else:
        raise ValueError(f"optim.clip_mode: unknown mode {mode!r}; expected global, per_param or per_module")
