"""Image sources: random access to decoded RGB images, their labels and names.

- :class:`FileSource` covers an ImageFolder tree (labels from class sub-folders) and a plain folder
  of unlabeled images (recursive, any format Pillow reads; label -1).
- torchvision's CIFAR-10/100 and STL-10, with their ``download`` flag for machines with a network.
- scikit-learn's handwritten digits, which ship inside the package and need no network (the demo).
- :class:`~selfsup.data.shards.ShardSource`: tar shards with an index, at a path or fsspec URL,
  for collections larger than memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import DataConfig
from ..errors import DataError

JPEG_MAGIC = b"\xff\xd8\xff"  # a JPEG file's first bytes, whatever its extension says


def pillow_extensions() -> frozenset[str]:
    return frozenset(ext.lower() for ext in Image.registered_extensions())


class ImageSource:
    """Base: ``len``, ``load(i) -> RGB PIL image``, ``labels`` (-1 when unlabeled), ``name(i)``."""

    classes: list[str] = []
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> Image.Image:
        raise NotImplementedError

    def name(self, i: int) -> str:
        return str(i)

    def load_array(self, i: int) -> np.ndarray:
        """Image ``i`` as a ``(H, W, 3)`` uint8 array."""
        return np.asarray(self.load(i))

    def open(self, i: int) -> Image.Image:
        """Image ``i`` as Pillow opens a file: its size and format read, its pixels decoded on
        ``load()`` (in any mode; ``to_rgb`` after). Sources of decoded pixels return them."""
        return self.load(i)


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB from any mode: palette and grayscale expanded, CMYK converted, alpha dropped."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGB", img.size, (0, 0, 0))
        bg.paste(img, mask=img.getchannel("A"))
        return bg
    return img.convert("RGB")


class FileSource(ImageSource):
    def __init__(self, root: Path, files: list[Path], labels: Sequence[int], classes: list[str]):
        self.root = root
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = classes

    def load(self, i: int) -> Image.Image:
        with Image.open(self.files[i]) as img:
            img.load()
            return img.copy() if img.mode == "RGB" else to_rgb(img)

    def open(self, i: int) -> Image.Image:
        return Image.open(self.files[i])

    def read(self, i: int) -> bytes:
        """The file's bytes, undecoded."""
        return self.files[i].read_bytes()

    def name(self, i: int) -> str:
        return str(self.files[i].relative_to(self.root))

    @classmethod
    def scan(cls, root: str | Path, labelled: bool) -> FileSource:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"data directory not found: {root}")
        exts = pillow_extensions()

        def images_under(d: Path) -> list[Path]:
            out = []
            for dirpath, dirnames, filenames in os.walk(d, followlinks=True):
                dirnames.sort()
                out.extend(Path(dirpath) / f for f in sorted(filenames) if Path(f).suffix.lower() in exts)
            return out

        if labelled:
            with os.scandir(root) as entries:
                classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
            if not classes:
                raise DataError(f"{root}: an ImageFolder tree needs one sub-folder per class, found none")
            files, labels = [], []
            for c, name in enumerate(classes):
                found = images_under(root / name)
                files += found
                labels += [c] * len(found)
        else:
            classes, files = [], images_under(root)
            labels = [-1] * len(files)
        if not files:
            raise DataError(f"{root}: no image files found (extensions Pillow reads, e.g. .jpg .png)")
        return cls(root, files, labels, classes)


class ArraySource(ImageSource):
    """Images held in memory as an ``(N, H, W, 3)`` uint8 array (torchvision's CIFAR, digits)."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], classes: list[str], prefix: str):
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = classes
        self.prefix = prefix

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(np.asarray(self.images[i]))

    def load_array(self, i: int) -> np.ndarray:
        return np.asarray(self.images[i])

    def name(self, i: int) -> str:
        return f"{self.prefix}/{i}"


def _torchvision_source(kind: str, root: str, split: str, download: bool) -> ImageSource:
    import torchvision.datasets as tvd

    try:
        if kind in ("cifar10", "cifar100"):
            cls = tvd.CIFAR10 if kind == "cifar10" else tvd.CIFAR100
            if split not in ("train", "test"):
                raise DataError(f"data.split: {kind} has splits 'train' and 'test', not {split!r}")
            ds = cls(root, train=split == "train", download=download)
            return ArraySource(ds.data, ds.targets, list(ds.classes), f"{kind}-{split}")
        if kind == "stl10":
            ds = tvd.STL10(root, split=split, download=download)
            images = np.ascontiguousarray(ds.data.transpose(0, 2, 3, 1))
            return ArraySource(images, ds.labels, list(ds.classes), f"stl10-{split}")
    except RuntimeError as e:  # torchvision's "Dataset not found or corrupted"
        raise DataError(f"{kind} under {root!r}: {e} (set data.download=true on a machine with a network)") from None
    raise DataError(f"unknown data source {kind!r}")


def digits_source(split: str = "train", size: int = 32) -> ArraySource:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels), upsampled to ``size`` pixels.

    Split deterministically: every 5th image is ``test`` (360), the rest ``train`` (1,437).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.arange(len(d.target))
    keep = idx % 5 == 0 if split == "test" else idx % 5 != 0
    if split not in ("train", "test"):
        raise DataError(f"data.split: digits has splits 'train' and 'test', not {split!r}")
    x = torch.from_numpy(d.images[keep] / 16.0).float()[:, None]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    img = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).permute(0, 2, 3, 1)
    return ArraySource(img.contiguous().numpy(), d.target[keep], [str(c) for c in range(10)], f"digits-{split}")


def build_source(cfg: DataConfig) -> ImageSource:
    kind = cfg.source
    if kind == "digits":
        return digits_source(cfg.split)
    if kind in ("cifar10", "cifar100", "stl10"):
        return _torchvision_source(kind, cfg.path or "./data", cfg.split, cfg.download)
    if not cfg.path:
        raise DataError("data.path is empty: pass --data DIR")
    root = Path(cfg.path)
    if kind == "auto":
        if "://" in cfg.path or (root / "index.json").is_file():
            kind = "shards"
        elif not root.is_dir():
            raise DataError(f"data directory not found: {root}")
        else:
            kind = "imagefolder" if is_imagefolder(root) else "folder"
    if kind == "shards":
        from .shards import ShardSource

        source = ShardSource(cfg.path)
        source.check_shards()  # a missing shard fails now, not hours into the run
        return source
    if kind not in ("imagefolder", "folder"):
        raise DataError(
            f"data.source: unknown source {kind!r}; expected auto, imagefolder, folder, shards, "
            "cifar10, cifar100, stl10 or digits"
        )
    return FileSource.scan(root, labelled=kind == "imagefolder")


def is_imagefolder(root: Path) -> bool:
    """Whether ``root`` has sub-folders (read as one per class); hidden ones do not count."""
    with os.scandir(root) as entries:
        return any(e.is_dir() and not e.name.startswith(".") for e in entries)


def subset_indices(n: int, limit: int, seed: int) -> np.ndarray:
    """A fixed-seed random subset of ``limit`` indices (sorted), or all of them."""
    if limit <= 0 or limit >= n:
        return np.arange(n)
    g = torch.Generator().manual_seed(seed)
    return np.sort(torch.randperm(n, generator=g)[:limit].numpy())
