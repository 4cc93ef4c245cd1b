"""Decode once: every image of a source as one uint8 array, memory-mapped and shared.

The array lives in a file under the cache folder (``$SELFSUP_CACHE``, default ``~/.cache/selfsup``),
keyed by the source's file list and the decode size. It is written once (by local rank 0, through a
temporary file renamed into place) and then memory-mapped read-only by every process: DataLoader
workers and the ranks of a node share the same pages instead of holding copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .. import dist
from .archive import default_cache
from .sources import ArraySource, DataError, FileSource, ImageSource


class MixedSizes(DataError):
    """The images have several sizes and no ``data.cache_size`` was given (recorded in the cache
    folder, so every rank, and the next run, learns it without decoding again)."""


#: ``data.augment: auto`` caches a folder only while its decoded array takes at most this share of
#: the machine's memory and of the cache disk's free space
CACHE_SHARE = 0.25


def fits_cache(source: ImageSource, size: int = 0, cache: str | Path | None = None) -> bool:
    """Whether ``source`` decoded (at ``size``, or at its first image's size) fits :data:`CACHE_SHARE` of
    memory and of the cache disk: what ``data.augment: auto`` asks before it decodes a folder once."""
    if isinstance(source, ArraySource):
        return True
    if not isinstance(source, FileSource) or not len(source):
        return False
    try:
        with Image.open(source.files[0]) as img:
            w, h = (size, size) if size else img.size
    except Exception:  # noqa: BLE001 - an unreadable first file: let the per-image path report it
        return False
    need = len(source) * w * h * 3
    folder = Path(cache or default_cache())
    folder.mkdir(parents=True, exist_ok=True)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return need <= CACHE_SHARE * min(ram or need / CACHE_SHARE, shutil.disk_usage(folder).free)


def _fit_square(img: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` (bicubic), then the centred ``size x size`` square."""
    w, h = img.size
    s = size / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def decoded(source: ImageSource, size: int = 0, cache: str | Path | None = None, progress: bool = True) -> ArraySource:
    """``source`` as an :class:`ArraySource` backed by a shared uint8 memmap ``(N, H, W, 3)``.

    ``size`` 0 keeps the images' size (they must all be equal, as in CIFAR or STL-10); otherwise each
    image is fitted to a ``size`` square first. Sources already in memory are returned as they are.
    Unreadable images are reported by name and listed in ``.unreadable`` (indices to leave out).
    """
    if isinstance(source, ArraySource) and size in (0, source.images.shape[1]):
        return source
    if not isinstance(source, FileSource):
        raise DataError("data.cache needs an image folder or an in-memory source")
    h = hashlib.sha256()
    for f in source.files:
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    key = h.hexdigest()[:20]
    folder = Path(cache or default_cache()) / "decoded"
    path, meta_path = folder / f"{key}-{size}.u8", folder / f"{key}-{size}.json"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank == 0 and not meta_path.exists():
        _build(source, size, path, meta_path, progress)
    dist.barrier()
    meta = json.loads(meta_path.read_text())
    if "mixed_sizes" in meta:
        raise MixedSizes(f"{meta['mixed_sizes']}: data.cache needs equal image sizes or data.cache_size")
    images = np.memmap(path, dtype=np.uint8, mode="r", shape=tuple(meta["shape"]))
    out = ArraySource(images, source.labels, source.classes, str(source.root))
    out.name = source.name  # file names, not indices
    out.unreadable = set(meta["unreadable_index"])
    return out


def _build(source: FileSource, size: int, path: Path, meta_path: Path, progress: bool) -> None:
    n = len(source)
    first = None
    for i in range(n):
        try:
            first = source.load(i)
            break
        except Exception:  # noqa: BLE001
            continue
    if first is None:
        raise DataError(f"none of the {n} images under {source.root} could be read")
    hw = (size, size) if size else (first.size[1], first.size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    mm = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, hw[0], hw[1], 3))
    bad, bad_idx = [], []
    try:
        for i in tqdm(range(n), desc="decoding images once", disable=not progress, leave=False, mininterval=2):
            try:
                img = source.load(i)
            except Exception as e:  # noqa: BLE001
                bad.append(f"{source.name(i)} ({type(e).__name__})")
                bad_idx.append(i)
                continue
            if size:
                img = _fit_square(img, size)
            elif (img.size[1], img.size[0]) != hw:
                mixed = f"{source.name(i)} is {img.size[0]}x{img.size[1]}, not {hw[1]}x{hw[0]} like the first image"
                meta_path.write_text(json.dumps({"mixed_sizes": mixed, "root": str(source.root)}))
                return
            mm[i] = np.asarray(img)
        mm.flush()
        del mm
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    meta_path.write_text(
        json.dumps(
            {"shape": [n, hw[0], hw[1], 3], "root": str(source.root), "unreadable": bad, "unreadable_index": bad_idx}
        )
    )
    for b in bad:
        warnings.warn(f"skipped unreadable image {b}", stacklevel=3)
