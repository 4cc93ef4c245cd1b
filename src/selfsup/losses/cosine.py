"""Cosine regression losses of the non-contrastive predictor methods (BYOL, SimSiam).

Both regress an online prediction ``p`` onto a target projection ``z`` that receives no gradient:

- BYOL (Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, arXiv:2006.07733, eq. 2): the
  normalized mean squared error ``||p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z)``;
- SimSiam (Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021,
  arXiv:2011.10566, eq. 1): the negative cosine ``D(p, z) = -cos(p, stopgrad(z))``.

The two differ by an affine map; each method keeps its paper's form so logged losses read as in the
paper (BYOL: 0 best, 8 worst for the symmetrized sum; SimSiam: -1 best).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..precision import fp32


@fp32
def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's ``D(p, z)``: minus the cosine similarity of matching rows, averaged over the batch.

    Args:
        p: ``(n, d)`` predictions (gradients flow into them).
        z: ``(n, d)`` targets; detached here (the stop-gradient), so no gradient reaches them.

    Returns:
        A scalar in ``[-1, 1]``.
    """
    if p.shape != z.shape or p.ndim != 2:
        raise ValueError(f"expected two (n, d) tensors of one shape, got {tuple(p.shape)} and {tuple(z.shape)}")
    p = F.normalize(p.float(), dim=1)
    z = F.normalize(z.detach().float(), dim=1)
    return -(p * z).sum(dim=1).mean()


@fp32
def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss ``2 - 2 cos(p, z)`` per row, averaged over the batch (``z`` detached).

    Args:
        p: ``(n, d)`` online predictions.
        z: ``(n, d)`` target projections (no gradient reaches them).

    Returns:
        A scalar in ``[0, 4]``.
    """
    return 2 + 2 * negative_cosine(p, z)
