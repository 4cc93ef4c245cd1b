"""InfoNCE, the contrastive loss of MoCo, in its two forms.

- :func:`info_nce_queue`: MoCo v1/v2 (He et al. 2019, arXiv:1911.05722, eq. (1)): each query's positive
  is its own key; the negatives are a queue of earlier keys.
- :func:`info_nce_batch`: MoCo v3 (Chen, Xie, He 2021, arXiv:2104.02057, Algorithm 1): the keys of the
  whole (global) batch are the candidates; the positive is the key of the same image.

Both use cosine similarity (embeddings are l2-normalized here) divided by the temperature, and the
mean cross-entropy over this rank's queries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import dist
from ..precision import fp32


@fp32
def info_nce_queue(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """``-log exp(q.k+/t) / (exp(q.k+/t) + sum_j exp(q.n_j/t))`` averaged over queries.

    Args:
        q: ``(n, d)`` queries. k: ``(n, d)`` their positive keys. queue: ``(K, d)`` negative keys.
    """
    if q.shape != k.shape or q.ndim != 2 or queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(
            f"expected q, k (n, d) and queue (K, d); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(queue.shape)}"
        )
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    queue = F.normalize(queue.float(), dim=1)
    pos = (q * k).sum(dim=1, keepdim=True)  # (n, 1)
    neg = q @ queue.T  # (n, K)
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


@fp32
def info_nce_batch(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.2, gather: bool = True) -> torch.Tensor:
    """Cross-entropy of ``q_i`` against all keys, the positive being ``k_i``.

    Args:
        q: ``(n, d)`` this rank's queries. k: ``(n, d)`` this rank's keys of the same images.
        gather: under torch.distributed, the candidates are the keys of all ranks (the global batch),
            with gradients flowing back to their rank when ``k`` requires them. No-op on one process.

    Returns:
        The mean over this rank's ``n`` queries; with DDP averaging over ranks this is the loss (and
        gradient) of one process holding the global batch.
    """
    if q.shape != k.shape or q.ndim != 2:
        raise ValueError(f"expected two (n, d) tensors of one shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    offset = 0
    if gather:
        offset = dist.rank() * q.shape[0]
        k = dist.gather(k)
    logits = q @ k.T / temperature  # (n, N)
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels)
