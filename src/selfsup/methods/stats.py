"""Statistics that methods log."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Collapse signal: per-dimension std of l2-normalized embeddings, times sqrt(d).

    SimSiam (arXiv:2011.10566, sec. 4.1) shows this std is about ``1/sqrt(d)`` for well-spread
    embeddings and 0 on collapse; scaled by ``sqrt(d)`` it reads about 1 when healthy and falls
    towards 0 on collapse, whatever the embedding width.
    """
    z = F.normalize(z.detach().float(), dim=1)
    return z.std(dim=0).mean() * (z.shape[1] ** 0.5)
