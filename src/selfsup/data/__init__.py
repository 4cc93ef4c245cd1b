"""Data: image sources, per-view augmentation, the resumable sampler."""

from __future__ import annotations

import numpy as np
import torch

from ..config import DataConfig
from ..dist import resolve_device
from .batched import BatchedViews
from .dataset import EpochSampler, ViewDataset, collate, sample_seed
from .device_decode import DeviceDecodedViews
from .opencv_views import OpenCVViews
from .opencv_views import available as opencv_available
from .shards import ShardSource, write_shards
from .sources import ArraySource, DataError, FileSource, ImageSource, build_source, digits_source, subset_indices
from .views import crop_transform, eval_transform, expand_views, view_transform


def resolve_augment(augment: str, device: torch.device | str | None = None) -> str:
    """``auto``: ``batched`` when training on a GPU, ``opencv`` on the CPU (``pil`` if OpenCV cannot
    be imported); any other value as given. ``device`` None: the one ``train.device: auto`` picks."""
    if augment == "opencv" and not opencv_available():
        raise DataError("data.augment: opencv needs OpenCV (pip install opencv-python-headless)")
    if augment != "auto":
        return augment
    device = resolve_device("auto") if device is None else torch.device(device)
    if device.type != "cpu":
        return "batched"
    return "opencv" if opencv_available() else "pil"


def resolve_decode(decode: str, source: ImageSource, device: torch.device | str | None = None) -> str:
    """Where the batched path decodes images of several sizes: ``auto`` is ``device`` for files and
    shards when training on CUDA, ``workers`` otherwise."""
    encoded = isinstance(source, (FileSource, ShardSource))  # undecoded bytes to send
    if decode == "device" and not encoded:
        raise DataError(f"data.decode: device needs files or shards, not {type(source).__name__}")
    if decode != "auto":
        return decode
    device = resolve_device("auto") if device is None else torch.device(device)
    return "device" if device.type == "cuda" and encoded else "workers"


def pretrain_dataset(cfg: DataConfig, device: torch.device | str | None = None) -> ViewDataset:
    """The multi-view dataset a pretraining run draws from (``cfg.limit`` applied), on the fastest
    path the data allow (``cfg.augment``):

    - ``pil``: each view augmented per image in the DataLoader workers (Pillow);
    - ``opencv``: every view of an image made per image in the workers with OpenCV's uint8 kernels,
      from the parameters the Pillow path draws, JPEGs decoded at a reduced scale where the crops
      allow (:mod:`~selfsup.data.opencv_views`): the CPU's fast path;
    - batched, images of one size in memory (CIFAR, STL-10, a decoded folder): items are the raw
      uint8 images; crops and the rest of the views are drawn in batches on the training device;
    - batched, images of several sizes (files, shards, a decoded folder): each view's crop is cut per
      image in the workers, against the whole image, and the rest is done in batches on the device;
      with ``decode: device`` (``auto`` on CUDA, files and shards) the workers send the JPEGs
      undecoded and the training process decodes them in batches there (nvJPEG), cutting the crops
      there too (:mod:`~selfsup.data.device_decode`).

    ``auto`` is ``batched`` on a GPU and ``opencv`` on the CPU (:func:`resolve_augment` for the
    training ``device``), and decodes a folder once (``cache``) when it fits
    :data:`~selfsup.data.cache.CACHE_SHARE` of memory and disk. ``dataset.batch_augment`` is what the
    training loop applies to its batches.
    """
    device = resolve_device("auto") if device is None else torch.device(device)
    source = build_source(cfg)
    idx = subset_indices(len(source), cfg.limit, cfg.limit_seed)
    if cfg.cache and cfg.decode == "device":
        raise DataError("data.cache=true decodes the images once; data.decode=device decodes them every step")
    if isinstance(source, FileSource) and (cfg.cache or (cfg.augment == "auto" and cfg.decode != "device")):
        from .cache import decoded, fits_cache

        if len(idx) < len(source):  # decode only the subset
            source = FileSource(source.root, [source.files[i] for i in idx], source.labels[idx], source.classes)
            idx = np.arange(len(source))
        if cfg.cache or fits_cache(source, cfg.cache_size):
            source = decoded(source, cfg.cache_size)
            idx = np.setdiff1d(idx, np.asarray(sorted(source.unreadable), dtype=int))
    views = expand_views(cfg.views)
    augment = resolve_augment(cfg.augment, device)
    if augment == "pil":
        dataset = ViewDataset(source, [view_transform(s, cfg.mean, cfg.std) for s in views], idx)
    elif augment == "opencv":
        dataset = ViewDataset(source, [], idx, views=OpenCVViews(views, cfg.mean, cfg.std, reduce=cfg.reduce_decode))
    elif (decode := resolve_decode(cfg.decode, source, device)) == "workers" and isinstance(source, ArraySource):
        # one size, in memory: raw images, cropped on the device
        dataset = ViewDataset(source, [], idx)
        dataset.batch_augment = BatchedViews(cfg.views, cfg.mean, cfg.std)
    elif decode == "device":  # undecoded from the workers: decoded, cropped and augmented on the device
        dataset = ViewDataset(source, [], idx, encoded=True)
        dataset.batch_augment = DeviceDecodedViews(cfg.views, device, cfg.mean, cfg.std)
    else:  # several sizes: crops against the whole image per image, the rest in batches
        dataset = ViewDataset(source, [crop_transform(s) for s in views], idx)
        dataset.batch_augment = BatchedViews(cfg.views, cfg.mean, cfg.std, crop=False)
    dataset.resident = cfg.resident
    return dataset


def eval_dataset(cfg: DataConfig, size: int) -> ViewDataset:
    """Single centre-cropped view per image with labels, for kNN and feature extraction."""
    source = build_source(cfg)
    idx = subset_indices(len(source), cfg.limit, cfg.limit_seed)
    return ViewDataset(source, [eval_transform(size, cfg.mean, cfg.std)], idx)


__all__ = [
    "BatchedViews",
    "DataError",
    "DeviceDecodedViews",
    "EpochSampler",
    "ImageSource",
    "OpenCVViews",
    "ViewDataset",
    "build_source",
    "collate",
    "digits_source",
    "eval_dataset",
    "eval_transform",
    "expand_views",
    "pretrain_dataset",
    "resolve_decode",
    "resolve_augment",
    "crop_transform",
    "ShardSource",
    "write_shards",
    "sample_seed",
    "subset_indices",
    "view_transform",
]
