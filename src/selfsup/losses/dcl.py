"""The decoupled contrastive loss (DCL) and its von Mises-Fisher weighted form (DCLW).

Yeh, Hong, Hsu, Liu, Chen, LeCun. "Decoupled Contrastive Learning", ECCV 2022, arXiv:2110.06848, eq. (6):
NT-Xent with the positive pair removed from the denominator, and the weighting ``w`` of the positive
term. No official code was released; the reference implementation compared with is lightly's
(``lightly/loss/dcl_loss.py``), itself after raminnakhli/Decoupled-Contrastive-Learning (``loss/dcl.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import dist
from ..precision import fp32


def vmf_weights(pos: torch.Tensor, sigma: float, gather: bool = True) -> torch.Tensor:
    """DCLW's weights ``w_i = 2 - exp(s_i / sigma) / mean_j exp(s_j / sigma)`` (``= 2 - N softmax``) of
    the positive similarities ``s`` ``(n,)`` of this rank, the mean over the global batch (``gather``).
    They average to 1 over the batch and carry no gradient (a weight, as lightly's ``.detach()``)."""
    s = pos.detach()
    every = dist.gather_no_grad(s) if gather else s
    w = 2 - every.shape[0] * torch.softmax(every / sigma, dim=0)
    offset = dist.rank() * s.shape[0] if every.shape[0] != s.shape[0] else 0
    return w[offset : offset + s.shape[0]]


@fp32
def dcl_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.1,
    sigma: float | None = None,
    gather: bool = True,
) -> torch.Tensor:
    """DCL over both views: each of the 2N embeddings scores its positive against its 2N-2 negatives only.

    For anchor ``u`` (either view of image ``i``) with positive ``u'`` (the other view), the term is
    ``-w_i <u, u'> / tau + log sum_{v not in {u, u'}} exp(<u, v> / tau)`` over the l2-normalized
    embeddings of both views of the global batch: NT-Xent's denominator without the positive.

    Args:
        z1, z2: ``(n, d)`` projections of the two views of the same ``n`` images (this rank's part).
        temperature: tau.
        sigma: DCLW's von Mises-Fisher weighting of the positive term (:func:`vmf_weights`; the paper's
            0.5); None: DCL, ``w_i = 1``.
        gather: under torch.distributed, negatives (and DCLW's weight normalization) from all ranks,
            with gradients flowing back to the rank that produced them. No-op on one process.

    Returns:
        The mean over this rank's 2n anchors, a scalar; with DDP averaging over ranks, the loss (and
        gradient) of one process holding the whole global batch.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"expected two (n, d) tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    z1 = F.normalize(z1, dim=1)
    z2 = F.normalize(z2, dim=1)
    n = z1.shape[0]
    a1, a2 = (dist.gather(z1), dist.gather(z2)) if gather else (z1, z2)
    offset = dist.rank() * n if a1.shape[0] != n else 0
    big_n = a1.shape[0]
    logits = torch.cat([z1, z2]) @ torch.cat([a1, a2]).T / temperature  # (2n, 2N)
    local = torch.arange(n, device=z1.device) + offset
    self_idx = torch.cat([local, local + big_n])
    pos_idx = torch.cat([local + big_n, local])
    excluded = F.one_hot(self_idx, 2 * big_n).bool() | F.one_hot(pos_idx, 2 * big_n).bool()
    negative = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1)
    pos = (z1 * z2).sum(dim=1)
    if sigma is not None:
        pos = vmf_weights(pos, sigma, gather) * pos
    return (negative - torch.cat([pos, pos]) / temperature).mean()
