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

from .device_decode import Encoded, EncodedBatch, read_encoded
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
    ``views`` instead of ``transforms``: one callable making every view of a sample from its lazily
    opened image (``source.open``: header read, not decoded), so that it decides how to decode
    (:class:`~selfsup.data.opencv_views.OpenCVViews`). ``encoded``: the one "view" is the sample
    undecoded (:class:`~selfsup.data.device_decode.Encoded`), for decoding on the training device.
    """

    def __init__(
        self,
        source: ImageSource,
        transforms: list[Callable],
        indices: np.ndarray | None = None,
        views: Callable | None = None,
        encoded: bool = False,
    ):
        if sum([bool(transforms), views is not None, encoded]) > 1:
            raise ValueError("give per-view transforms, one views callable or encoded, not several")
        self.encoded = encoded
        self.source = source
        self.transforms = transforms
        self.views = views
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices)
        self.raw = not transforms and views is None and not encoded
        self.batch_augment: Callable | None = None  # set for raw datasets: the on-device augmentation
        self.resident = False  # raw and in memory: batches indexed on the device (ResidentBatches)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels[self.indices]

    def _load(self, i: int, make: Callable | None = None):
        """Image ``i`` or, if unreadable, the next readable one; returns (image, position, skipped).
        ``make(k)``, if given, replaces loading sample ``k`` (its failures count as unreadable too)."""
        skipped = []
        if make is None and self.encoded:
            make = lambda k: read_encoded(self.source, k)  # noqa: E731
        make = make or (self.source.load_array if self.raw else self.source.load)
        for step in range(len(self)):
            j = (i + step) % len(self)
            try:
                k = int(self.indices[j])
                return make(k), j, skipped
            except Exception as e:  # noqa: BLE001 - any decoder error means "unreadable"
                skipped.append(f"{self.source.name(int(self.indices[j]))} ({type(e).__name__}: {e})")
        raise DataError(f"none of the {len(self)} images could be read; first: {skipped[0]}")

    def check_readable(self) -> None:
        """Fail now, with a clear message, if no image at all can be read."""
        self._load(0)

    def __getitem__(self, item):
        i, seed = item if isinstance(item, tuple) else (item, 0)
        if self.views is not None:
            with torch.random.fork_rng(devices=[]):

                def make(k: int) -> list[torch.Tensor]:
                    torch.default_generator.manual_seed(seed)  # a stand-in draws what the unreadable one would
                    return self.views(self.source.open(k))

                views, j, skipped = self._load(i, make)
            return views, int(self.source.labels[self.indices[j]]), skipped
        img, j, skipped = self._load(i)
        if self.encoded:
            return [img], int(self.source.labels[self.indices[j]]), skipped
        if self.raw:
            return [torch.from_numpy(np.array(img)).permute(2, 0, 1)], int(self.source.labels[self.indices[j]]), skipped
        with torch.random.fork_rng(devices=[]):
            # the CPU generator alone: torch.manual_seed also queues CUDA/XPU seeding, ~1 ms a call
            torch.default_generator.manual_seed(seed)
            views = [t(img) for t in self.transforms]
        return views, int(self.source.labels[self.indices[j]]), skipped


def collate(batch):
    nviews = len(batch[0][0])
    if isinstance(batch[0][0][0], Encoded):
        views = [EncodedBatch([b[0][0] for b in batch])]
    else:
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

    def positions(self) -> np.ndarray:
        """The dataset positions this rank iterates from the current position, in order (no seeds)."""
        order = self._order()[: self.steps_per_epoch * self.global_batch]
        per_rank = self.global_batch // self.world
        gb, r = self.global_batch, self.rank
        parts = [
            order[s * gb : (s + 1) * gb][r * per_rank : (r + 1) * per_rank]
            for s in range(self.start_step, self.steps_per_epoch)
        ]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
        return torch.randperm(self.n, generator=g).numpy()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.positions():
            yield int(i), sample_seed(self.seed, self.epoch, int(i))

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * (self.global_batch // self.world)


def warn_skipped(skipped: list[str], seen: set[str]) -> None:
    for s in skipped:
        if s not in seen:
            seen.add(s)
            warnings.warn(f"skipped unreadable image {s}", stacklevel=2)


class ResidentBatches:
    """The batches of a raw in-memory dataset, indexed where its images live: no DataLoader, worker
    or per-sample Python in the step. Yields what ``DataLoader(dataset, sampler=sampler,
    collate_fn=collate)`` yields, in the same order (so a run resumes exactly as it would there).

    On a CUDA device the uint8 images are copied there once (in chunks, without a second host
    copy); on the CPU the shared array (a memory map or torchvision's) is indexed batch by batch.
    """

    def __init__(self, dataset: ViewDataset, sampler: EpochSampler, batch_size: int, device: torch.device):
        images = dataset.source.images  # (N, H, W, 3) uint8
        self.indices, self.sampler, self.batch_size = np.asarray(dataset.indices), sampler, batch_size
        self.labels = torch.as_tensor(dataset.source.labels[self.indices], dtype=torch.long)
        self.host = device.type == "cpu"
        if self.host:
            self.images = images
        else:
            h, w, c = images.shape[1:]
            self.images = torch.empty((len(self.indices), c, h, w), dtype=torch.uint8, device=device)
            for a in range(0, len(self.indices), 4096):
                chunk = np.ascontiguousarray(images[self.indices[a : a + 4096]])
                self.images[a : a + len(chunk)] = torch.from_numpy(chunk).to(device).permute(0, 3, 1, 2)
            self.labels = self.labels.to(device)

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        pos = self.sampler.positions()
        if not self.host:
            pos_t = torch.as_tensor(pos, dtype=torch.long).to(self.images.device)
        for a in range(0, len(pos), self.batch_size):
            if self.host:
                p = pos[a : a + self.batch_size]
                x = torch.from_numpy(np.ascontiguousarray(self.images[self.indices[p]])).permute(0, 3, 1, 2)
                yield {"views": [x.contiguous()], "labels": self.labels[p], "skipped": []}
            else:
                p = pos_t[a : a + self.batch_size]
                yield {
                    "views": [self.images.index_select(0, p)],
                    "labels": self.labels.index_select(0, p),
                    "skipped": [],
                }

    @staticmethod
    def fits(dataset: ViewDataset, device: torch.device) -> bool:
        """A raw dataset over one uint8 array that fits: half of the CUDA device's free memory (always on the CPU,
        where it is indexed in place)."""
        images = getattr(dataset.source, "images", None)
        if not (dataset.raw and getattr(dataset, "resident", False) and isinstance(images, np.ndarray)):
            return False
        if images.ndim != 4 or images.dtype != np.uint8:
            return False
        if device.type == "cuda":
            need = len(dataset.indices) * int(np.prod(images.shape[1:]))
            return need <= torch.cuda.mem_get_info(device)[0] // 2
        return device.type == "cpu"
