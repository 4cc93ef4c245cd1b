"""VICReg's variance-invariance-covariance loss (Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-
Covariance Regularization for Self-Supervised Learning", ICLR 2022, arXiv:2105.04906; official
facebookresearch/vicreg ``main_vicreg.py:194-220``)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .. import dist


class VICRegTerms(NamedTuple):
    """The three unweighted terms, each a scalar."""

    invariance: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor

    def weighted(self, sim_coeff: float, std_coeff: float, cov_coeff: float) -> torch.Tensor:
        """``sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance``."""
        return sim_coeff * self.invariance + std_coeff * self.variance + cov_coeff * self.covariance


def _off_diagonal(c: torch.Tensor) -> torch.Tensor:
    """The ``d^2 - d`` off-diagonal entries of a square ``(d, d)`` matrix, as a view (no copy): after
    dropping the last entry, each row of ``(d - 1, d + 1)`` starts with a diagonal entry."""
    d = c.shape[0]
    return c.flatten()[:-1].view(d - 1, d + 1)[:, 1:]


def vicreg_terms(
    z1: torch.Tensor, z2: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4, gather: bool = True
) -> VICRegTerms:
    """The invariance, variance and covariance terms of two views' embeddings, in float32.

    - invariance: ``mean_{i,k} (z1_ik - z2_ik)^2`` (``F.mse_loss``) over this rank's ``n`` rows, as the
      official code (before its gather); with DDP's averaging over equal per-rank batches it is the
      global batch's mean.
    - variance: ``(v(Z1) + v(Z2)) / 2`` with ``v(Z) = mean_k relu(gamma - sqrt(Var(Z_:k) + eps))``, the
      unbiased variance over the global batch (the official code halves the sum, ``main_vicreg.py:207``;
      solo-learn does not, see the CIFAR-10 preset).
    - covariance: ``c(Z1) + c(Z2)`` with ``c(Z) = sum_{k != l} C(Z)_kl^2 / d`` and ``C(Z)`` the
      covariance over the global batch (denominator ``N - 1``).

    Args:
        z1, z2: ``(n, d)`` expander outputs of the two views of the same ``n`` images (this rank's).
        gamma: target standard deviation. eps: added to the variance under the square root.
        gather: under torch.distributed, variance and covariance over all ranks' rows
            (``N = n x world size``), gathered with gradient (:func:`selfsup.dist.gather`, the official
            ``FullGatherLayer``): every rank computes the same terms, and with DDP's averaging the
            gradient equals one process holding the global batch. No-op on one process.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"expected two (n, d) tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    with torch.autocast(z1.device.type, enabled=False):
        z1, z2 = z1.float(), z2.float()
        invariance = F.mse_loss(z1, z2)
        if gather:
            z1, z2 = dist.gather(z1), dist.gather(z2)
        big_n, d = z1.shape
        if big_n < 2:
            raise ValueError("VICReg's variance and covariance need at least 2 embeddings in the (global) batch")
        variance = z1.new_zeros(())
        covariance = z1.new_zeros(())
        for z in (z1, z2):
            z = z - z.mean(dim=0)
            std = torch.sqrt(z.pow(2).sum(dim=0) / (big_n - 1) + eps)
            variance = variance + F.relu(gamma - std).mean() / 2
            covariance = covariance + _off_diagonal(z.T @ z / (big_n - 1)).pow(2).sum() / d
    return VICRegTerms(invariance, variance, covariance)


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    gather: bool = True,
) -> torch.Tensor:
    """``sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance`` (:func:`vicreg_terms`);
    the official defaults 25, 25, 1 (``--sim-coeff``, ``--std-coeff``, ``--cov-coeff``). A scalar."""
    return vicreg_terms(z1, z2, gamma, eps, gather).weighted(sim_coeff, std_coeff, cov_coeff)
