"""The KoLeo regularizer of DINOv2 (Oquab et al. 2023, arXiv:2304.07193, sec. 4; Sablayrolles et al. 2019,
arXiv:1806.03198; facebookresearch/dinov2 ``dinov2/loss/koleo_loss.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import dist
from ..precision import fp32


@fp32
def koleo_loss(x: torch.Tensor, eps: float = 1e-8, gather: bool = True) -> torch.Tensor:
    """``-mean_i log(||x_i - x_nn(i)|| + eps)`` over the l2-normalized rows of ``x`` ``(B, D)``, ``nn(i)`` the
    row of largest inner product with row ``i`` other than itself (a fixed index: the gradient flows through
    the distance), the distance with ``PairwiseDistance(2, eps)``'s ``||a - b + eps||``.

    With ``gather`` the neighbours come from the batch of every rank (gathered with gradient), so the loss,
    averaged over ranks, and its gradient are those of the whole batch in one process; without it each rank
    looks among its own rows only, as the official ``KoLeoLoss``.
    """
    x = F.normalize(x.float(), dim=-1, eps=eps)
    pool = dist.gather(x) if gather else x
    offset = dist.rank() * x.shape[0] if gather else 0
    with torch.no_grad():
        dots = x @ pool.T
        self_idx = torch.arange(x.shape[0], device=x.device)
        dots[self_idx, self_idx + offset] = -1.0  # the official trick: the diagonal never wins
        nearest = dots.argmax(dim=1)
    distances = F.pairwise_distance(x, pool[nearest], p=2, eps=eps)
    return -torch.log(distances + eps).mean()
