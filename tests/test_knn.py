"""Weighted kNN against a brute-force reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.eval import knn_classify, knn_predict


def brute_force(bank, labels, queries, k, t, c):
    out = torch.zeros(queries.shape[0], c)
    for qi, q in enumerate(queries):
        sims = [(float(q @ b), int(y)) for b, y in zip(bank, labels)]
        sims.sort(key=lambda s: -s[0])
        for s, y in sims[:k]:
            out[qi, y] += torch.exp(torch.tensor(s / t))
    return out


def test_knn_matches_brute_force_with_chunking():
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(57, 6), dim=1)
    labels = torch.randint(0, 5, (57,))
    q = F.normalize(torch.randn(13, 6), dim=1)
    ref = brute_force(bank, labels, q, 7, 0.1, 5)
    for qc, bc in [(1024, 65536), (4, 10), (1, 3)]:
        ours = knn_predict(bank, labels, q, k=7, temperature=0.1, num_classes=5, query_chunk=qc, bank_chunk=bc)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_knn_is_perfect_on_separable_features():
    torch.manual_seed(1)
    centers = F.normalize(torch.randn(4, 16), dim=1) * 10
    ybank, yq = torch.arange(200) % 4, torch.arange(40) % 4
    bank = F.normalize(centers[ybank] + torch.randn(200, 16), dim=1)
    q = F.normalize(centers[yq] + torch.randn(40, 16), dim=1)
    res = knn_classify(bank, ybank, q, yq, k=20, temperature=0.1)
    assert res["top1"] == 1.0 and res["top5"] == 1.0
    # shuffled labels: chance level, far from perfect
    res = knn_classify(bank, ybank[torch.randperm(200)], q, yq, k=20, temperature=0.1)
    assert res["top1"] < 0.6
