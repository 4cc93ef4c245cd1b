"""Decode once: every image of a folder, whole, in one uint8 file, memory-mapped and shared.

The file lives under the cache folder (``$SELFSUP_CACHE``, default ``~/.cache/selfsup``), keyed by
the source's file list and the decode size. It is written once (by local rank 0, decoding with a
pool of processes into a temporary file renamed into place) and then memory-mapped read-only by
every process: DataLoader workers and the ranks of a node share the same pages.

Each image is kept whole, with its aspect ratio: at its own size, or with its shorter side resized
to ``size`` (Pillow's antialiased bicubic). A random resized crop of a cached image therefore has the
distribution torchvision's ``RandomResizedCrop`` has on the original file (area and aspect ratio are
fractions of the whole image). Images of one size read as an ``(N, H, W, 3)`` array
(:class:`ArraySource`); images of several sizes as a :class:`RaggedSource` over the same flat layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .. import dist
from .archive import default_cache
from .sources import ArraySource, DataError, FileSource, ImageSource, to_rgb

#: ``data.augment: auto`` caches a folder only while its decoded images take at most this share of
#: the machine's memory and of the cache disk's free space
CACHE_SHARE = 0.25
FORMAT = 2  # the flat layout with per-image shapes


class RaggedSource(ImageSource):
    """Images of several sizes in one flat uint8 buffer: image ``i`` is ``shapes[i]`` = (H, W) at
    ``offsets[i]``; unreadable images have the shape (0, 0)."""

    def __init__(self, flat: np.ndarray, shapes: np.ndarray, offsets: np.ndarray, source: FileSource):
        self.flat, self.shapes, self.offsets = flat, shapes, offsets
        self.labels, self.classes, self.name = source.labels, source.classes, source.name

    def load_array(self, i: int) -> np.ndarray:
        h, w = (int(v) for v in self.shapes[i])
        if h == 0:
            raise DataError(f"{self.name(i)} could not be read when the cache was built")
        return np.asarray(self.flat[self.offsets[i] : self.offsets[i] + h * w * 3]).reshape(h, w, 3)

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(self.load_array(i))


def cached_shape(w: int, h: int, size: int) -> tuple[int, int]:
    """(H, W) of a ``w x h`` image in the cache: its own, or the shorter side at ``size``, aspect kept."""
    if not size:
        return h, w
    s = size / min(w, h)
    return max(size, round(h * s)), max(size, round(w * s))


def _header_shape(path: Path, size: int) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return cached_shape(*img.size, size)
    except Exception:  # noqa: BLE001 - unreadable: decoded as (0, 0), reported by the build
        return 0, 0


def fits_cache(source: ImageSource, size: int = 0, cache: str | Path | None = None) -> bool:
    """Whether ``source`` decoded (estimated from its first image) fits :data:`CACHE_SHARE` of memory
    and of the cache disk: what ``data.augment: auto`` asks before it decodes a folder once."""
    if isinstance(source, ArraySource):
        return True
    if not isinstance(source, FileSource) or not len(source):
        return False
    h, w = _header_shape(source.files[0], size)
    need = len(source) * max(h * w, 1) * 3
    folder = Path(cache or default_cache())
    folder.mkdir(parents=True, exist_ok=True)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return need <= CACHE_SHARE * min(ram or need / CACHE_SHARE, shutil.disk_usage(folder).free)


def decoded(
    source: ImageSource, size: int = 0, cache: str | Path | None = None, progress: bool = True, workers: int = 0
) -> ImageSource:
    """``source`` decoded once into a shared memory map: an :class:`ArraySource` ``(N, H, W, 3)``
    when every image has one size, else a :class:`RaggedSource`. ``size`` > 0 resizes each image's
    shorter side to ``size`` (aspect kept). Sources already in memory are returned as they are.
    Unreadable images are reported by name and listed in ``.unreadable`` (indices to leave out).
    ``workers``: decoding processes (0: one per CPU core)."""
    if isinstance(source, ArraySource) and size in (0, source.images.shape[1]):
        return source
    if not isinstance(source, FileSource):
        raise DataError("data.cache needs an image folder or an in-memory source")
    h = hashlib.sha256(f"format {FORMAT}\n".encode())
    for f in source.files:
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    key = h.hexdigest()[:20]
    folder = Path(cache or default_cache()) / "decoded"
    path, meta_path = folder / f"{key}-{size}.u8", folder / f"{key}-{size}.json"
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and not meta_path.exists():
        _build(source, size, path, meta_path, progress, workers or os.cpu_count() or 1)
    dist.barrier()
    meta = json.loads(meta_path.read_text())
    shapes = np.asarray(meta["shapes"], dtype=np.int64).reshape(-1, 2)
    offsets = np.asarray(meta["offsets"], dtype=np.int64)
    flat = np.memmap(path, dtype=np.uint8, mode="r", shape=(int(meta["bytes"]),))
    out: ImageSource
    if meta["uniform"]:  # one size: every image has its slot, unreadable ones too
        hh, ww = meta["uniform"]
        out = ArraySource(flat.reshape(len(shapes), hh, ww, 3), source.labels, source.classes, str(source.root))
        out.name = source.name  # file names, not indices
    else:
        out = RaggedSource(flat, shapes, offsets, source)
    out.unreadable = set(meta["unreadable_index"])
    return out


def _decode_into(args: tuple) -> list[tuple[int, str]]:
    """Worker: decode files ``[(i, path, offset, (h, w))]`` into the memory map; returns failures."""
    tmp, total, size, jobs = args
    mm = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=(total,))
    bad = []
    for i, file, off, (h, w) in jobs:
        try:
            with Image.open(file) as img:
                img.load()
                img = to_rgb(img)
                if size:
                    img = img.resize((w, h), Image.BICUBIC)
                arr = np.asarray(img)
                if arr.shape != (h, w, 3):
                    raise ValueError(f"decoded as {arr.shape[1]}x{arr.shape[0]}, the header said {w}x{h}")
                mm[off : off + h * w * 3] = arr.reshape(-1)
        except Exception as e:  # noqa: BLE001 - any decoder error means "unreadable"
            bad.append((i, f"{type(e).__name__}: {e}"))
    mm.flush()
    return bad


def _build(source: FileSource, size: int, path: Path, meta_path: Path, progress: bool, workers: int) -> None:
    n = len(source)
    shapes = np.array([_header_shape(f, size) for f in source.files], dtype=np.int64).reshape(n, 2)
    if not (shapes[:, 0] > 0).any():
        raise DataError(f"none of the {n} images could be read (under {source.root}; first: {source.name(0)})")
    readable = shapes[shapes[:, 0] > 0]
    uniform = [int(v) for v in readable[0]] if (readable == readable[0]).all() else None
    slot = np.where(shapes[:, :1] > 0, shapes, readable[0]) if uniform else shapes  # one size: a slot each
    nbytes = slot[:, 0] * slot[:, 1] * 3
    offsets = np.concatenate([[0], np.cumsum(nbytes)[:-1]]).astype(np.int64)
    total = max(int(nbytes.sum()), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(total,)).flush()
    order = [i for i in range(n) if shapes[i, 0] > 0]
    chunk = max(1, min(256, len(order) // (4 * workers) or 1))
    jobs = [
        (str(tmp), total, size, [(i, str(source.files[i]), int(offsets[i]), tuple(shapes[i])) for i in part])
        for part in (order[a : a + chunk] for a in range(0, len(order), chunk))
    ]
    failed = {i: "unreadable header" for i in range(n) if shapes[i, 0] == 0}
    try:
        bar = tqdm(total=len(order), desc="decoding images once", disable=not progress, leave=False, mininterval=2)
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(workers) as pool:
                for job, bad in zip(jobs, pool.map(_decode_into, jobs)):
                    failed.update(bad)
                    bar.update(len(job[3]))
        else:
            for job in jobs:
                failed.update(_decode_into(job))
                bar.update(len(job[3]))
        bar.close()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    for i in failed:
        shapes[i] = 0
    bad = [f"{source.name(i)} ({failed[i]})" for i in sorted(failed)]
    meta = {
        "format": FORMAT,
        "root": str(source.root),
        "bytes": total,
        "uniform": uniform,
        "shapes": shapes.reshape(-1).tolist(),
        "offsets": offsets.tolist(),
    }
    tmp_meta = meta_path.with_suffix(f".tmp{os.getpid()}")
    tmp_meta.write_text(json.dumps({**meta, "unreadable": bad, "unreadable_index": sorted(failed)}))
    os.replace(tmp_meta, meta_path)
    for b in bad:
        warnings.warn(f"skipped unreadable image {b}", stacklevel=3)
