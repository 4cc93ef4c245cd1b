"""Weighted k-nearest-neighbour classification of frozen features.

Wu, Xiong, Yu, Lin. "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
CVPR 2018 (arXiv:1805.01978), as used by DINO's ``eval_knn.py``: cosine similarity to a labelled
bank, the top ``k`` neighbours vote for their class with weight ``exp(sim / T)``.
"""

from __future__ import annotations

import torch
from torch import nn

from .features import extract_features
from .supervised import topk_accuracy


@torch.no_grad()
def knn_neighbours(
    bank: torch.Tensor, queries: torch.Tensor, k: int, bank_chunk: int = 65536
) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarities and bank indices ``(Q, k)`` of each query's ``k`` nearest bank rows, nearest first.

    The bank is processed in chunks whose top-k are merged, so memory is ``O(Q x bank_chunk)``.
    """
    k = min(k, bank.shape[0])
    top_sim = torch.full((queries.shape[0], 0), float("-inf"), device=queries.device)
    top_idx = torch.zeros((queries.shape[0], 0), dtype=torch.long, device=queries.device)
    for start in range(0, bank.shape[0], bank_chunk):
        sim = queries @ bank[start : start + bank_chunk].T
        s, i = sim.topk(min(k, sim.shape[1]), dim=1)
        top_sim, pos = torch.cat([top_sim, s], 1).topk(min(k, top_sim.shape[1] + s.shape[1]), dim=1)
        top_idx = torch.cat([top_idx, i + start], 1).gather(1, pos)
    return top_sim, top_idx


def _vote(top_sim, top_idx, bank_labels, k, temperature, num_classes) -> torch.Tensor:
    """Class scores from the first ``k`` neighbours, each voting ``exp(sim / T)`` for its class."""
    weights = (top_sim[:, :k] / temperature).exp()
    scores = torch.zeros(top_sim.shape[0], num_classes, device=top_sim.device, dtype=weights.dtype)
    return scores.scatter_add_(1, bank_labels[top_idx[:, :k]], weights)


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
    whatever N and Q are; votes are scattered, not one-hot encoded, so it is independent of C too.
    """
    if bank.shape[0] != bank_labels.shape[0]:
        raise ValueError("bank and bank_labels differ in length")
    num_classes = int(bank_labels.max()) + 1 if num_classes is None else num_classes
    out = []
    for q in queries.split(query_chunk):
        sim, idx = knn_neighbours(bank, q, k, bank_chunk)
        out.append(_vote(sim, idx, bank_labels, k, temperature, num_classes))
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
    return topk_accuracy(knn_predict(bank, bank_labels, queries, k, temperature, num_classes), query_labels)


def knn_eval(
    encoder: nn.Module,
    train_ds,
    test_ds,
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = False,
    distributed: bool = False,
) -> dict[str, float]:
    """Weighted kNN top-1/top-5 of ``encoder`` features: bank ``train_ds``, queries ``test_ds``.

    ``distributed``: under torchrun, each rank extracts a shard and all get every feature."""
    if device is not None:
        encoder.to(device)
    kw = dict(progress=progress, distributed=distributed)
    bank, bank_y = extract_features(encoder, train_ds, batch_size, device, num_workers, desc="bank features", **kw)
    q, q_y = extract_features(encoder, test_ds, batch_size, device, num_workers, desc="test features", **kw)
    n_cls = max(len(train_ds.source.classes), int(bank_y.max()) + 1, int(q_y.max()) + 1)
    return knn_classify(bank, bank_y, q, q_y, k=k, temperature=temperature, num_classes=n_cls)


#: The sweep grid: k as in the field's CIFAR (200) and DINO (20) protocols and around them; T of
#: DINO (0.07), InstDisc and most CIFAR benchmarks (0.1) and a flat vote (0.5).
SWEEP_K = (10, 20, 100, 200)
SWEEP_T = (0.07, 0.1, 0.5)


@torch.no_grad()
def knn_sweep(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    ks: tuple[int, ...] = SWEEP_K,
    temperatures: tuple[float, ...] = SWEEP_T,
    num_classes: int | None = None,
    query_chunk: int = 1024,
) -> list[dict[str, float]]:
    """:func:`knn_classify` for every ``(k, T)`` of the grid from one neighbour search.

    Returns one ``{"k", "temperature", "top1", "top5"}`` per pair, ``k`` major. The ``max(ks)``
    nearest neighbours are found once per query chunk; each ``k`` uses their nearest prefix.
    """
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1 if num_classes is None else num_classes
    grid = [(k, t) for k in ks for t in temperatures]
    scores: dict[tuple[int, float], list[torch.Tensor]] = {g: [] for g in grid}
    for q in queries.split(query_chunk):
        sim, idx = knn_neighbours(bank, q, max(ks))
        for k, t in grid:
            scores[(k, t)].append(_vote(sim, idx, bank_labels, k, t, num_classes))
    return [{"k": k, "temperature": t, **topk_accuracy(torch.cat(scores[(k, t)]), query_labels)} for k, t in grid]
