"""TiCo's transformation invariance and covariance contrast loss.

Zhu, Moraes, Karakulak, Sobol, Canziani, LeCun. "TiCo: Transformation Invariance and Covariance Contrast
for Self-Supervised Visual Representation Learning", 2022, arXiv:2206.10698, eq. (1)-(2). No official
code was released; the reference implementation compared with is lightly's (``lightly/loss/tico_loss.py``,
after sayannag/TiCo-pytorch ``TiCo/main.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .. import dist


class TiCoTerms(NamedTuple):
    """``loss = invariance + contrast``; ``cov`` is the updated running matrix ``C_t`` (no gradient)."""

    loss: torch.Tensor
    invariance: torch.Tensor
    contrast: torch.Tensor
    cov: torch.Tensor


def tico_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    cov: torch.Tensor,
    beta: float = 0.9,
    rho: float = 8.0,
    gather: bool = True,
) -> TiCoTerms:
    """``1 - mean_i <z1_i, z2_i> + rho mean_i z1_i^T C_t z1_i`` on l2-normalized embeddings, with
    ``C_t = beta C_{t-1} + (1 - beta) B_t`` and ``B_t = mean_i z1_i z1_i^T`` over the global batch.

    Args:
        z1: ``(n, d)`` projections of the first view (the online network; gradients flow here).
        z2: ``(n, d)`` projections of the second view (the momentum encoder's, in TiCo).
        cov: ``(d, d)`` the running matrix ``C_{t-1}`` (zeros at the start of training).
        beta: the running matrix's momentum; rho: the weight of the covariance contrast.
        gather: under torch.distributed, ``B_t`` is the mean over every rank's embeddings (a sum of the
            ranks' ``z1^T z1``), so ``C_t`` is the one of one process holding the whole batch, the same
            on every rank. No-op on one process.

    Returns:
        :class:`TiCoTerms`. The loss is the mean over this rank's ``n`` images (with DDP averaging,
        that of the global batch); ``B_t`` and ``C_t`` carry no gradient, as in the paper.
    """
    if z1.shape != z2.shape or z1.ndim != 2 or cov.shape != (z1.shape[1], z1.shape[1]):
        raise ValueError(
            f"expected two (n, d) tensors and a (d, d) matrix, got {tuple(z1.shape)}, {tuple(z2.shape)}, "
            f"{tuple(cov.shape)}"
        )
    with torch.autocast(z1.device.type, enabled=False):  # float32 whatever autocast is active
        z1 = F.normalize(z1.float(), dim=1)
        z2 = F.normalize(z2.float(), dim=1)
        with torch.no_grad():
            zd = z1.detach()
            total = dist.all_reduce_sum(zd.T @ zd) if gather else zd.T @ zd
            count = z1.shape[0] * (dist.world_size() if gather else 1)
            new_cov = beta * cov.detach().float() + (1 - beta) * total / count
        invariance = 1 - (z1 * z2).sum(dim=1).mean()
        contrast = rho * ((z1 @ new_cov) * z1).sum(dim=1).mean()
    return TiCoTerms(invariance + contrast, invariance.detach(), contrast.detach(), new_cov)
