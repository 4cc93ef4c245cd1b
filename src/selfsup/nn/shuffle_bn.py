"""Shuffle-BN (He et al. 2019, arXiv:1911.05722, sec. 3.3) and its one-process emulation.

MoCo's BatchNorm is per GPU, and the key encoder sees its batch shuffled across GPUs, so a query and
its positive key are normalized with statistics of different sub-batches: the model cannot use BN
statistics to "cheat" the pretext task. Under torch.distributed, :func:`batch_shuffle` and
:func:`batch_unshuffle` do this as the official ``moco/builder.py`` does (gather, a permutation drawn
on rank 0 and broadcast, each rank takes its slice; the inverse permutation afterwards). On one
process they permute the local batch, and :class:`SplitBatchNorm` computes BN statistics per
contiguous split of the batch, emulating that many GPUs (as the official CIFAR-10 demo does).
"""

from __future__ import annotations

import torch
import torch.distributed
import torch.nn.functional as F
from torch import nn

from .. import dist


def _randperm(n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.randperm(n, device=device)
    return torch.randperm(n, generator=generator).to(device)


@torch.no_grad()
def batch_shuffle(x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of a random permutation of the global batch, and the index undoing it.

    ``x`` is ``(n, ...)`` on each rank; the result has the same shape. Pass the returned index to
    :func:`batch_unshuffle` together with the encoder's output for the shuffled input. The permutation
    comes from ``generator`` (a CPU one) when given, else from the global RNG.
    """
    if dist.world_size() == 1:
        perm = _randperm(x.shape[0], x.device, generator)
        return x[perm], torch.argsort(perm)
    x_all = dist.gather_no_grad(x)
    perm = _randperm(x_all.shape[0], x.device, generator)
    torch.distributed.broadcast(perm, src=0)  # every rank uses rank 0's permutation
    mine = perm.view(dist.world_size(), -1)[dist.rank()]
    return x_all[mine], torch.argsort(perm)


@torch.no_grad()
def batch_unshuffle(y: torch.Tensor, unshuffle: torch.Tensor) -> torch.Tensor:
    """Rows of ``y`` (computed on shuffled input) back in this rank's original order."""
    if dist.world_size() == 1:
        return y[unshuffle]
    y_all = dist.gather_no_grad(y)
    return y_all[unshuffle.view(dist.world_size(), -1)[dist.rank()]]


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics come from ``num_splits`` equal contiguous parts of the
    batch, as if each part ran on its own GPU. The running statistics become the mean over the parts
    of what each part's BN would have stored. In eval mode, and with ``num_splits=1``, it is exactly
    ``nn.BatchNorm2d`` (same parameters and buffers, so state dicts are interchangeable)."""

    def __init__(self, num_features: int, num_splits: int = 1, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.num_splits
        if s == 1 or not self.training:
            return super().forward(x)
        if x.shape[0] % s:
            raise ValueError(f"SplitBatchNorm: batch of {x.shape[0]} does not split into {s} equal parts")
        tracked = self.track_running_stats
        momentum = self.momentum if self.momentum is not None else 0.0
        if tracked:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                momentum = 1.0 / float(self.num_batches_tracked)
        # one fused batch norm per part: the parts are views of the batch in its own memory format
        # (channels_last stays channels_last), so the only copy is the concatenation (a reshape of the
        # parts into channel blocks copied twice and left NCHW: 1.5x slower a MoCo step on CPU)
        means = [self.running_mean.clone() if tracked else None for _ in range(s)]
        variances = [self.running_var.clone() if tracked else None for _ in range(s)]
        parts = x.chunk(s)
        out = [
            F.batch_norm(p, m, v, self.weight, self.bias, True, momentum, self.eps)
            for p, m, v in zip(parts, means, variances)
        ]
        if tracked:
            with torch.no_grad():
                self.running_mean.copy_(torch.stack(means).mean(0))  # type: ignore[arg-type]
                self.running_var.copy_(torch.stack(variances).mean(0))  # type: ignore[arg-type]
        return torch.cat(out)


def convert_split_bn(module: nn.Module, num_splits: int = 1) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by a :class:`SplitBatchNorm` holding the same
    parameters and buffers (in place for children; returns the converted module)."""
    out = module
    if type(module) is nn.BatchNorm2d:
        out = SplitBatchNorm(
            module.num_features,
            num_splits,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        out.load_state_dict(module.state_dict())
        if module.affine:
            out.weight.requires_grad_(module.weight.requires_grad)
            out.bias.requires_grad_(module.bias.requires_grad)
    for name, child in module.named_children():
        out.add_module(name, convert_split_bn(child, num_splits))
    return out


def set_bn_splits(module: nn.Module, num_splits: int) -> None:
    for m in module.modules():
        if isinstance(m, SplitBatchNorm):
            m.num_splits = num_splits


def fitting_splits(batch: int, requested: int) -> int:
    """The largest split count <= ``requested`` that divides ``batch`` into parts of >= 2 samples
    (BN needs two values per channel); 1 when none does."""
    for s in range(min(requested, batch // 2), 1, -1):
        if batch % s == 0:
            return s
    return 1
