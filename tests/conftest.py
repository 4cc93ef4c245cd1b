from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# tiny tensors: one thread avoids thread-pool overhead dominating every op on a 2-core machine
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CIFAR_ARCHIVE = Path(os.environ.get("SELFSUP_CIFAR_ARCHIVE", REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """Real CIFAR-10 JPEGs in ImageFolder layout (``train/``, ``test/``), extracted once to a cache."""
    from selfsup.data.archive import ensure_extracted

    if not CIFAR_ARCHIVE.is_file():
        pytest.skip(f"real CIFAR-10 archive not found at {CIFAR_ARCHIVE} (set SELFSUP_CIFAR_ARCHIVE)")
    return ensure_extracted(CIFAR_ARCHIVE) / "cifar10"


# ---------------------------------------------------------------------------------------------
# two gloo processes against one: the queue, the shuffle and MoCo v3's loss (test_nn, test_losses)


def _contrastive_rank(rank, world, batches, q, k, w, t):
    from selfsup.losses import info_nce_batch
    from selfsup.nn import FeatureQueue, batch_shuffle, batch_unshuffle

    out = {}
    # 1. shuffle across ranks: each rank holds half the rows, gets rows of the global batch, and
    #    the unshuffle puts the encoder's output back in this rank's order
    n = 4
    x = torch.arange(16.0).view(8, 2)[rank * n : (rank + 1) * n]
    shuffled, undo = batch_shuffle(x, torch.Generator().manual_seed(1))
    out["shuffled"] = shuffled
    out["restored"] = batch_unshuffle(shuffled * 10 + 1, undo)
    out["local"] = x * 10 + 1
    # 2. the queue: every step enqueues this rank's keys
    queue = FeatureQueue(10, 3)
    queue.queue.zero_()
    for b in batches:
        queue.enqueue(b[rank * 2 : (rank + 1) * 2])
    out["queue"], out["ptr"] = queue.queue.clone(), queue.ptr.item()
    # 3. MoCo v3's symmetric loss with keys gathered from both ranks; DDP averages the gradient
    sl = slice(rank * n, (rank + 1) * n)
    weight = w.clone().requires_grad_(True)
    q1, q2 = q[0][sl] @ weight, q[1][sl] @ weight
    loss = (info_nce_batch(q1, k[1][sl], t) + info_nce_batch(q2, k[0][sl], t)) * 2 * t
    loss.backward()
    out["loss"], out["grad"] = loss.item(), weight.grad / world
    return out


@pytest.fixture(scope="session")
def two_ranks():
    """One two-process run for the session, shared by its tests in test_nn.py and test_losses.py."""
    from _dist import run_distributed

    torch.manual_seed(0)
    batches = [torch.randn(4, 3) for _ in range(4)]  # global batch 4 (2 per rank), 4 steps: wraps at 10
    q = (torch.randn(8, 5), torch.randn(8, 5))
    k = (torch.randn(8, 6), torch.randn(8, 6))
    w = torch.randn(5, 6)
    t = 0.2
    return run_distributed(_contrastive_rank, 2, batches, q, k, w, t), (batches, q, k, w, t)


def pytest_collection_modifyitems(config, items):
    """``dist``: the tests that start two processes (gloo through ``run_distributed`` or the
    ``two_ranks`` fixture, or ``torchrun`` with ``nproc`` > 1), so that ``-m "not slow and not dist"``
    is a fast loop."""
    for item in items:
        params = item.callspec.params if hasattr(item, "callspec") else {}
        code = getattr(getattr(item, "function", None), "__code__", None)
        names = set(code.co_names) if code is not None else set()
        gloo = "run_distributed" in names or "two_ranks" in item.fixturenames
        if gloo or params.get("nproc", 1) > 1:
            item.add_marker(pytest.mark.dist)
