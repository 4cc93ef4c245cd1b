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
