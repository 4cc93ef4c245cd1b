"""Maximum manifold capacity representations: the nuclear norm of the centroid matrix.

Yerxa, Kuang, Simoncelli, Chung. "Learning Efficient Coding of Natural Images with Maximum Manifold
Capacity Representations", NeurIPS 2023, arXiv:2303.03307. Official code: ThomasYerxa/mmcr
(``mmcr/imagenet/loss_mmcr.py``, ``loss_mmcr_momentum.py``, ``mmcr/cifar_stl/loss_mmcr.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .. import dist


class MMCRTerms(NamedTuple):
    """``loss = -global_nuc + lambd * local_nuc``; ``local_nuc`` is 0 (not computed) when lambd is 0."""

    loss: torch.Tensor
    global_nuc: torch.Tensor
    local_nuc: torch.Tensor


def mmcr_loss(
    z: torch.Tensor,
    target: torch.Tensor | None = None,
    lambd: float = 0.0,
    gather: bool = True,
) -> MMCRTerms:
    """``-||C||_* + lambd * mean_i ||Z_i||_*`` over the global batch of N images.

    ``Z_i`` is the ``(k, d)`` matrix of image ``i``'s l2-normalized view embeddings, its centroid
    ``c_i`` the mean of its rows (averaged with the momentum encoder's centroid when ``target`` is
    given, as the official ``MMCR_Momentum_Loss``), ``C`` the ``(N, d)`` matrix of centroids and
    ``||.||_*`` the nuclear norm (sum of singular values). The local term uses the online views only.

    Args:
        z: ``(n, k, d)`` online projections of ``k`` views of this rank's ``n`` images.
        target: the momentum encoder's ``(n, k, d)`` projections of the same views, or None.
        lambd: weight of the mean local nuclear norm (the official default 0 skips it).
        gather: under torch.distributed, ``C`` holds every rank's images (as the official code's
            all-gather), with gradients flowing back to the rank that produced them. No-op on one process.

    Returns:
        :class:`MMCRTerms`, the same loss on every rank; with DDP averaging, the gradient is that of one
        process holding the whole batch.
    """
    if z.ndim != 3 or (target is not None and target.shape != z.shape):
        raise ValueError(
            f"expected (n, k, d) projections (and a target of the same shape), got {tuple(z.shape)}"
            + (f" and {tuple(target.shape)}" if target is not None else "")
        )
    with torch.autocast(z.device.type, enabled=False):  # float32 (SVDs have no bf16 kernels)
        z = F.normalize(z.float(), dim=-1)
        every = dist.gather(z) if gather else z
        centroids = every.mean(dim=1)
        if target is not None:
            t = F.normalize(target.detach().float(), dim=-1)
            centroids = 0.5 * (centroids + (dist.gather_no_grad(t) if gather else t).mean(dim=1))
        global_nuc = torch.linalg.svdvals(centroids).sum()
        if lambd != 0:
            local_nuc = torch.linalg.svdvals(every).sum() / every.shape[0]
        else:
            local_nuc = centroids.new_zeros(())
    return MMCRTerms(lambd * local_nuc - global_nuc, global_nuc.detach(), local_nuc.detach())
