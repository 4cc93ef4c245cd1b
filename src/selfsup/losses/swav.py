"""SwAV's swapped prediction loss (Caron et al. 2020, arXiv:2006.09882; official ``main_swav.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..precision import fp32


@fp32
def swav_loss(scores: list[torch.Tensor], codes: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Swapped prediction: ``codes[i]`` (the code of view ``i``, ``(B, K)``) is predicted from every
    other view's prototype ``scores[v]`` ``(B, K)``; cross-entropy averaged over the batch, over the
    ``len(scores) - 1`` predicting views, then over the coded views."""
    logp = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]
    total = scores[0].new_zeros((), dtype=torch.float32)
    for i, q in enumerate(codes):
        sub = sum(-(q * logp[v]).sum(dim=1).mean() for v in range(len(scores)) if v != i)
        total = total + sub / (len(scores) - 1)
    return total / len(codes)
