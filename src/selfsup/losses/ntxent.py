"""NT-Xent, the normalized temperature-scaled cross-entropy of SimCLR.

Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, arXiv:2002.05709, eq. (1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import dist
from ..precision import fp32


@fp32
def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.1,
    gather: bool = True,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """NT-Xent over both views: each of the 2N embeddings has one positive and 2N-2 negatives.

    Args:
        z1, z2: ``(n, d)`` projections of the two views of the same ``n`` images (this rank's part).
        temperature: the softmax temperature tau.
        gather: under torch.distributed, use the embeddings of all ranks as negatives (N = n x world
            size), with gradients flowing back to the rank that produced them. No-op on one process.
        negatives: optional ``(K, d)`` extra negatives for every anchor (SimCLR v2's memory of
            momentum-encoder embeddings, arXiv:2006.10029 sec. 2); no gradient flows into them.

    Returns:
        The mean loss over this rank's 2n anchors, a scalar. With DDP averaging over ranks this is the
        loss (and gradient) of one process holding the whole global batch.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"expected two (n, d) tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    z1 = F.normalize(z1.float(), dim=1)
    z2 = F.normalize(z2.float(), dim=1)
    n = z1.shape[0]
    if gather:
        a1, a2 = dist.gather(z1), dist.gather(z2)
        offset = dist.rank() * n
    else:
        a1, a2 = z1, z2
        offset = 0
    big_n = a1.shape[0]
    anchors = torch.cat([z1, z2])  # (2n, d)
    candidates = torch.cat([a1, a2])  # (2N, d)
    logits = anchors @ candidates.T / temperature  # (2n, 2N)
    local = torch.arange(n, device=z1.device) + offset
    self_idx = torch.cat([local, local + big_n])
    pos_idx = torch.cat([local + big_n, local])
    logits = logits.masked_fill(F.one_hot(self_idx, 2 * big_n).bool(), float("-inf"))
    if negatives is not None:
        extra = F.normalize(negatives.detach().float(), dim=1)
        logits = torch.cat([logits, anchors @ extra.T / temperature], dim=1)
    return F.cross_entropy(logits, pos_idx)
