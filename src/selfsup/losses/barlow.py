"""Barlow Twins' cross-correlation and redundancy-reduction loss (Zbontar et al. 2021,
arXiv:2103.03230; official ``main.py``)."""

from __future__ import annotations

import torch

from .. import dist


def cross_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Empirical cross-correlation ``a^T b / N`` over the global batch.

    Args:
        a, b: ``(n, d)`` embeddings of the two views on this rank, already batch-normalized over the
            global batch (zero mean, unit variance per dimension).

    Returns:
        ``(d, d)``, the same on every rank: the local products summed over ranks (differentiably,
        see :func:`selfsup.dist.all_reduce_sum`) divided by ``N = n x world size``.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two (n, d) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    with torch.autocast(a.device.type, enabled=False):
        c = a.float().T @ b.float()
    return dist.all_reduce_sum(c) / (a.shape[0] * dist.world_size())


def barlow_twins_loss(c: torch.Tensor, lambd: float) -> torch.Tensor:
    """``sum_i (1 - c_ii)^2 + lambd * sum_{i != j} c_ij^2`` for a ``(d, d)`` cross-correlation ``c``."""
    diag = torch.diagonal(c)
    off = c.masked_fill(torch.eye(c.shape[0], dtype=torch.bool, device=c.device), 0.0)
    return (1 - diag).pow(2).sum() + lambd * off.pow(2).sum()
