"""Datasets over an :class:`ImageSource`, the resumable sampler and the collate function.

Augmentation randomness is a pure function of ``(seed, epoch, index)``: the sampler hands every
index its own seed, so views do not depend on the number of workers or ranks, and a run resumed
mid-epoch draws exactly the views the uninterrupted run would have drawn.

Unreadable images never stop a run: the next readable image stands in (keeping batch shapes
equal across ranks) and the skipped file is reported by name with the batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .sources import DataError, ImageSource


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch (splitmix64 of the three numbers)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x ^= x >> 27
    return x & (2**63 - 1)


class ViewDataset(Dataset):
    """Items: ``(views, label, skipped)`` with one tensor per transform (one per view).

    Indexed by ``(index, seed)`` pairs from :class:`EpochSampler`, or by a plain int (seed 0).
    With no transforms, the one "view" is the decoded image as a ``(3, H, W)`` uint8 tensor, for
    augmentation on the training device (:class:`~selfsup.data.batched.BatchedViews`).
    """

    def __init__(self, source: ImageSource, transforms: list[Callable], indices: np.ndarray | None = None):
        self.source = source
        self.transforms = transforms
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices)
        self.raw = not transforms
        self.batch_augment: Callable | None = None  # set for raw datasets: the on-device augmentation

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels[self.indices]

    def _load(self, i: int):
        """Image ``i`` or, if unreadable, the next readable one; returns (image, position, skipped)."""
        skipped = []
        for step in range(len(self)):
            j = (i + step) % len(self)
            try:
                k = int(self.indices[j])
                return (self.source.load_array(k) if self.raw else self.source.load(k)), j, skipped
            except Exception as e:  # noqa: BLE001 - any decoder error means "unreadable"
                skipped.append(f"{self.source.name(int(self.indices[j]))} ({type(e).__name__}: {e})")
        raise DataError(f"none of the {len(self)} images could be read; first: {skipped[0]}")

    def check_readable(self) -> None:
        """Fail now, with a clear message, if no image at all can be read."""
        self._load(0)

    def __getitem__(self, item):
        i, seed = item if isinstance(item, tuple) else (item, 0)
        img, j, skipped = self._load(i)
        if self.raw:
            return [torch.from_numpy(np.array(img)).permute(2, 0, 1)], int(self.source.labels[self.indices[j]]), skipped
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            views = [t(img) for t in self.transforms]
        return views, int(self.source.labels[self.indices[j]]), skipped


def collate(batch):
    nviews = len(batch[0][0])
    views = [torch.stack([b[0][v] for b in batch]) for v in range(nviews)]
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    skipped = [s for b in batch for s in b[2]]
    return {"views": views, "labels": labels, "skipped": skipped}


class EpochSampler(Sampler):
    """This rank's ``(index, seed)`` pairs for one epoch, resumable from any position.

    Each epoch draws a permutation from ``(seed, epoch)``, keeps ``steps x global_batch`` samples
    (drop-last over the global batch), and gives rank ``r`` the ``r``-th slice of each global batch,
    so that the global batch, gathered in rank order, is the same whatever the number of ranks.
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
    ):
        if global_batch % world:
            raise ValueError(f"batch size {global_batch} is not divisible by the world size {world}")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.rank, self.world, self.shuffle, self.drop_last = rank, world, shuffle, drop_last
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        full, rest = divmod(self.n, self.global_batch)
        return full if self.drop_last or not rest else full + 1

    def set_position(self, epoch: int, step: int = 0) -> None:
        self.epoch, self.start_step = epoch, step

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
        return torch.randperm(self.n, generator=g).numpy()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self._order()[: self.steps_per_epoch * self.global_batch]
        per_rank = self.global_batch // self.world
        for step in range(self.start_step, self.steps_per_epoch):
            batch = order[step * self.global_batch : (step + 1) * self.global_batch]
            for i in batch[self.rank * per_rank : (self.rank + 1) * per_rank]:
                yield int(i), sample_seed(self.seed, self.epoch, int(i))

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * (self.global_batch // self.world)


def warn_skipped(skipped: list[str], seen: set[str]) -> None:
    for s in skipped:
        if s not in seen:
            seen.add(s)
            warnings.warn(f"skipped unreadable image {s}", stacklevel=2)
