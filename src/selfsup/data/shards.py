"""Sharded datasets: image folders packed into tar files with an index, read by random access.

:func:`write_shards` packs a folder (or ImageFolder tree) into ``shard-000000.tar``, ... in the
WebDataset layout, so the shards also work with WebDataset's tools: each sample is a member
``KEY.jpg`` (the original file's bytes, not re-encoded; other formats keep their extension, e.g.
``KEY.png``) and, for labelled trees, ``KEY.cls`` (the class index in ASCII digits). ``KEY`` is
the file's position in :meth:`FileSource.scan`'s sorted order, zero-padded to 9 digits, so a key
names the same file whatever the shard size and however many files were skipped. Shards hold
1,000 samples by default (about 110 MB of ImageNet JPEGs: large enough for fast sequential copies,
small enough to spread over workers). ``index.json``, written last, lists per shard its file name,
its number of samples and, as columns, each sample's key, the byte offset of its image data in the
tar (``TarInfo.offset_data``), its size, extension, label (-1 unlabeled) and width and height.
Packing is deterministic: the same folder gives byte-identical shards and index.

:class:`ShardSource` reads sample ``i`` with one seek and one read in its shard, from a local
folder or any fsspec URL (``s3://``, ``gs://``, ``file://``, ``memory://``...). It is our own small
reader rather than WebDataset's pipeline because that pipeline streams: it has no random access,
so it can neither give every rank its slice of one global batch (the same batches whatever the
number of ranks) nor resume mid-epoch at the exact sample, both of which :class:`EpochSampler`
provides. WebDataset's indexed reader (``wids``) has random access, but is a dependency for what
is here an index and a seek.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tarfile
import warnings
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import fsspec  # a dependency of torch
import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from tqdm.auto import tqdm

from .sources import JPEG_MAGIC, DataError, FileSource, ImageSource, is_imagefolder, to_rgb

VERSION = 1
MAX_OPEN = 64  # shard files a process keeps open (random access touches them all; stay under ulimit -n)


def _shard_name(s: int) -> str:
    return f"shard-{s:06d}.tar"


def _ext(path: str) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    return "jpg" if ext in ("jpeg", "jpe", "jfif") else ext


def _pack_shard(job: tuple[str, int, list[tuple[int, str, str, int]]]) -> tuple[dict, list[str]]:
    """Write one shard; returns its index entry and the names of the files it skipped."""
    dst, s, items = job
    cols: dict[str, list] = {k: [] for k in ("key", "offset", "size", "ext", "label", "width", "height")}
    bad = []
    file = _shard_name(s)
    tmp = os.path.join(dst, f".{file}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for pos, path, name, label in items:
            try:
                data = Path(path).read_bytes()
                with Image.open(io.BytesIO(data)) as img:
                    w, h = img.size  # from the header: no decode
                    img.verify()
            except Exception as e:  # noqa: BLE001 - any failure means "not an image we can use"
                bad.append(f"{name} ({type(e).__name__})")
                continue
            key, ext = f"{pos:09d}", _ext(path)
            members = [(f"{key}.{ext}", data)] + ([(f"{key}.cls", str(label).encode())] if label >= 0 else [])
            for member, payload in members:
                info = tarfile.TarInfo(member)
                info.size, info.mtime, info.mode = len(payload), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(payload))
            for k, v in zip(cols, (key, None, len(data), ext, label, w, h)):  # offsets: below, from the tar
                cols[k].append(v)
    with tarfile.open(tmp) as tar:
        offsets = {m.name: m.offset_data for m in tar}
    cols["offset"] = [offsets[f"{k}.{e}"] for k, e in zip(cols["key"], cols["ext"])]
    os.replace(tmp, os.path.join(dst, file))
    return {"file": file, "samples": len(cols["key"]), **cols}, bad


def write_shards(
    src: str | Path,
    dst: str | Path,
    shard_size: int = 1000,
    workers: int | None = None,
    progress: bool = True,
    labelled: bool | None = None,
) -> dict:
    """Pack the images under ``src`` into tar shards of ``shard_size`` samples and an index in ``dst``.

    ``labelled`` None reads ``src`` as an ImageFolder tree when it has class sub-folders (as
    ``data.source: auto`` does). Shards are written by a pool of ``workers`` processes (default:
    one per CPU). Files Pillow cannot open and verify are skipped, counted and named in a warning.
    Returns ``{"path", "samples", "shards", "classes", "skipped", "unreadable"}``.
    """
    src, dst = Path(src), Path(dst)
    source = FileSource.scan(src, labelled=is_imagefolder(src) if labelled is None else labelled)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "index.json").unlink(missing_ok=True)  # an interrupted re-pack must not look complete
    n = len(source)
    items = [(i, str(f), source.name(i), int(y)) for i, (f, y) in enumerate(zip(source.files, source.labels))]
    jobs = [(str(dst), s, items[a : a + shard_size]) for s, a in enumerate(range(0, n, shard_size))]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    shards, bad = [], []
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        with tqdm(total=n, desc="packing shards", unit="img", disable=not progress) as bar:
            for entry, skipped in (pool.map if pool else map)(_pack_shard, jobs):
                shards.append(entry)
                bad += skipped
                bar.update(entry["samples"] + len(skipped))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    if len(bad) == n:
        raise DataError(f"none of the {n} images under {src} could be read; first: {bad[0]}")
    index = {"format": "selfsup-shards", "version": VERSION, "classes": source.classes, "shards": shards}
    tmp = dst / ".index.json.tmp"
    tmp.write_text(json.dumps(index, separators=(",", ":")))
    os.replace(tmp, dst / "index.json")
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        warnings.warn(f"skipped {len(bad)} unreadable image(s) of {n}: {', '.join(bad[:5])}{more}", stacklevel=2)
    return {
        "path": str(dst),
        "samples": n - len(bad),
        "shards": len(shards),
        "classes": source.classes,
        "skipped": len(bad),
        "unreadable": bad,
    }


class ShardSource(ImageSource):
    """Random access to the samples of shards written by :func:`write_shards`, at a path or fsspec URL.

    Each process opens a shard on first use and keeps up to ``MAX_OPEN`` of them open; handles are
    never shared (they are dropped when pickled for a DataLoader worker and reopened after a fork).
    ``sizes`` is the ``(N, 2)`` array of images' width and height, from the index.
    """

    def __init__(self, url: str | Path):
        self.url = str(url).rstrip("/")
        self._fs, self._root = fsspec.core.url_to_fs(self.url)
        try:
            with self._fs.open(posixpath.join(self._root, "index.json"), "rb") as f:
                index = json.load(f)
        except FileNotFoundError:
            raise DataError(
                f"{self.url}: no index.json (pack a folder with selfsup.data.shards.write_shards)"
            ) from None
        if index.get("format") != "selfsup-shards" or index.get("version") != VERSION:
            raise DataError(f"{self.url}/index.json: not a version {VERSION} selfsup shard index")
        shards = index["shards"]

        def col(k: str, dtype) -> np.ndarray:
            return np.concatenate([np.asarray(s[k], dtype=dtype) for s in shards] or [np.zeros(0, dtype)])

        self.files = [s["file"] for s in shards]
        self.classes = index["classes"]
        self.labels = col("label", np.int64)
        self.keys, self.exts = col("key", str), col("ext", str)
        self.offsets, self.nbytes = col("offset", np.int64), col("size", np.int64)
        self.sizes = np.stack([col("width", np.int64), col("height", np.int64)], axis=1)
        self.shard = np.repeat(np.arange(len(shards)), [s["samples"] for s in shards])
        self._handles: OrderedDict = OrderedDict()
        self._pid = os.getpid()

    def name(self, i: int) -> str:
        return f"{self.files[self.shard[i]]}:{self.keys[i]}"

    def check_shards(self) -> None:
        """Raise :class:`DataError` naming the first shard that is missing or shorter than the index needs."""
        try:  # one listing rather than a request per shard
            have = {posixpath.basename(e["name"]): e["size"] for e in self._fs.ls(self._root, detail=True)}
        except Exception:  # noqa: BLE001 - a store that cannot list: ask file by file
            have = {}
        need = np.zeros(len(self.files), dtype=np.int64)
        np.maximum.at(need, self.shard, self.offsets + self.nbytes)
        for file, need_s in zip(self.files, need.tolist()):
            size = have.get(file)
            if size is None:
                try:
                    size = self._fs.size(posixpath.join(self._root, file))
                except FileNotFoundError:
                    raise DataError(f"shard {self.url}/{file} is missing") from None
            if size < need_s:
                raise DataError(f"shard {self.url}/{file} is {size} bytes, the index needs {need_s}: truncated copy?")

    def _open(self, s: int):
        if self._pid != os.getpid():  # forked: the parent's handles share its file positions
            self._handles, self._pid = OrderedDict(), os.getpid()
        f = self._handles.pop(s, None)
        if f is None:
            try:
                f = self._fs.open(posixpath.join(self._root, self.files[s]), "rb", cache_type="none")
            except OSError as e:
                raise DataError(f"cannot open shard {self.url}/{self.files[s]}: {e}") from None
            if len(self._handles) >= MAX_OPEN:
                self._handles.popitem(last=False)[1].close()
        self._handles[s] = f  # most recently used last
        return f

    def read(self, i: int) -> bytes:
        """The stored bytes of sample ``i``'s image, as packed."""
        f = self._open(int(self.shard[i]))
        f.seek(int(self.offsets[i]))
        data = f.read(int(self.nbytes[i]))
        if len(data) != self.nbytes[i]:
            raise DataError(f"{self.name(i)}: shard ends after {len(data)} of the image's {self.nbytes[i]} bytes")
        return data

    def load_array(self, i: int) -> np.ndarray:
        data = self.read(i)
        try:
            if data[:3] == JPEG_MAGIC:  # JPEG, whatever the extension says
                x = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
                return x.permute(1, 2, 0).numpy()
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return np.asarray(to_rgb(img))
        except Exception as e:  # noqa: BLE001 - any decoder error means "corrupt"
            raise DataError(f"{self.name(i)}: corrupt {self.exts[i]} image ({type(e).__name__}: {e})") from None

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(self.load_array(i))

    def open(self, i: int) -> Image.Image:
        return Image.open(io.BytesIO(self.read(i)))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": OrderedDict()}
