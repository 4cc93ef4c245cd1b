"""Sinkhorn-Knopp: soft, equipartitioned assignments of samples to prototypes (SwAV).

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin. "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", NeurIPS 2020, arXiv:2006.09882, sec. 3.1 and ``distributed_sinkhorn``
of the official main_swav.py: ``Q = exp(scores / epsilon)`` scaled alternately so that each prototype
receives ``1/K`` of the mass over the whole (all-ranks) batch and each sample ``1/B``; the codes are
``B * Q``, one distribution over prototypes per sample.
"""

from __future__ import annotations

import torch
import torch.distributed

from .. import dist
from ..precision import fp32


@torch.no_grad()
@fp32
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Codes ``(B, K)`` for ``scores`` ``(B, K)`` (samples x prototypes), computed in float32.

    Every row of the result sums to 1 (the last scaling is per sample); every column sums to about
    ``B_total / K``, exactly in the limit of iterations. Under torch.distributed, the per-prototype sums
    and the sample count are all-reduced, so ``B_total`` is the global batch and each rank's rows equal
    the single-process codes of the concatenated batch. No-op reductions on one process.

    Each prototype's scores are shifted by their maximum over the global batch before the
    exponential: the first per-prototype normalization cancels that factor exactly, and the shift keeps
    ``exp`` finite (and every prototype's mass non-zero) for small ``epsilon`` or unnormalized scores.
    """
    s = scores.detach().float()
    top = s.max(dim=0).values
    if dist.is_dist() and dist.world_size() > 1:
        torch.distributed.all_reduce(top, op=torch.distributed.ReduceOp.MAX)
    q = torch.exp((s - top) / epsilon).T  # (K, B), as in the paper's notation
    k = q.shape[0]
    b = dist.all_reduce_sum(torch.tensor(float(q.shape[1]), device=q.device))
    q /= dist.all_reduce_sum(q.sum())
    for _ in range(iterations):
        q /= dist.all_reduce_sum(q.sum(dim=1, keepdim=True)) * k  # each prototype: 1/K of the mass
        q /= q.sum(dim=0, keepdim=True) * b  # each sample: 1/B
    return (q * b).T
