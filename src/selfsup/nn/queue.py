"""A FIFO queue of embeddings: MoCo's dictionary of negative keys (He et al. 2019, arXiv:1911.05722).

The queue and its write pointer are registered buffers, so they live in the method's state dict: a
checkpointed run resumes with the same keys in the same slots.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist


class FeatureQueue(nn.Module):
    """``size`` rows of ``dim`` features; :meth:`enqueue` overwrites the oldest rows.

    Rows start as random unit vectors, as in the official MoCo (``randn`` normalized), so the loss is
    defined from the first step. Under torch.distributed every rank enqueues the keys of all ranks
    (rank order), keeping identical queues everywhere; on one process this equals enqueuing the
    concatenated per-rank batches.
    """

    queue: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be positive, got size={size}, dim={dim}")
        self.register_buffer("queue", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.queue.shape[0]

    def forward(self) -> torch.Tensor:
        """The stored keys ``(size, dim)``, detached (a snapshot: later enqueues do not change it)."""
        return self.queue.clone().detach()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` ``(n, dim)`` (this rank's; all ranks' are gathered) after the newest row,
        wrapping around at the end."""
        keys = dist.gather_no_grad(keys.detach())
        n = keys.shape[0]
        idx = (self.ptr + torch.arange(n, device=self.queue.device)) % self.size
        # more keys than rows: the newest ``size`` survive, in the slots sequential writes give them
        self.queue[idx[-self.size :]] = keys[-self.size :].to(self.queue.dtype)
        self.ptr.copy_((self.ptr + n) % self.size)
