"""Weighted k-nearest-neighbour classification of frozen features.

Wu, Xiong, Yu, Lin. "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
CVPR 2018 (arXiv:1805.01978), as used by DINO's ``eval_knn.py``: cosine similarity to a labelled
bank, the top ``k`` neighbours vote for their class with weight ``exp(sim / T)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    query_chunk: int = 1024,
    bank_chunk: int = 65536,
) -> torch.Tensor:
    """Class scores ``(Q, C)`` for each query; ``argmax`` is the prediction.

    ``bank`` ``(N, D)`` and ``queries`` ``(Q, D)`` should be l2-normalized. Both are processed in
    chunks (a running top-k merges bank chunks), so memory is ``O(query_chunk x bank_chunk)``
    whatever N and Q are.
    """
    if bank.shape[0] != bank_labels.shape[0]:
        raise ValueError("bank and bank_labels differ in length")
    num_classes = int(bank_labels.max()) + 1 if num_classes is None else num_classes
    k = min(k, bank.shape[0])
    out = []
    for q in queries.split(query_chunk):
        top_sim = torch.full((q.shape[0], 0), float("-inf"), device=q.device)
        top_idx = torch.zeros((q.shape[0], 0), dtype=torch.long, device=q.device)
        for start in range(0, bank.shape[0], bank_chunk):
            sim = q @ bank[start : start + bank_chunk].T
            s, i = sim.topk(min(k, sim.shape[1]), dim=1)
            top_sim, pos = torch.cat([top_sim, s], 1).topk(min(k, top_sim.shape[1] + s.shape[1]), dim=1)
            top_idx = torch.cat([top_idx, i + start], 1).gather(1, pos)
        weights = (top_sim / temperature).exp()
        votes = F.one_hot(bank_labels[top_idx], num_classes).float()
        out.append((votes * weights.unsqueeze(-1)).sum(1))
    return torch.cat(out)


def knn_classify(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
) -> dict[str, float]:
    """``{"top1": ..., "top5": ...}`` (fractions in [0, 1]) of weighted kNN on the queries."""
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1 if num_classes is None else num_classes
    scores = knn_predict(bank, bank_labels, queries, k, temperature, num_classes)
    top = scores.topk(min(5, num_classes), dim=1).indices
    hit = top == query_labels.unsqueeze(1)
    return {"top1": hit[:, 0].float().mean().item(), "top5": hit.any(1).float().mean().item()}
