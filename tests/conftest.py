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
