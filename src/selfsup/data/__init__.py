"""Data: image sources, per-view augmentation, the resumable sampler."""

from __future__ import annotations

import numpy as np

from ..config import DataConfig
from .batched import BatchedViews
from .dataset import EpochSampler, ViewDataset, collate, sample_seed
from .sources import ArraySource, DataError, FileSource, ImageSource, build_source, digits_source, subset_indices
from .views import eval_transform, expand_views, view_transform


def pretrain_dataset(cfg: DataConfig) -> ViewDataset:
    """The multi-view dataset a pretraining run draws from (``cfg.limit`` applied).

    With ``cfg.augment == "batched"`` its items are raw uint8 images and :func:`batch_augment`
    gives the views; ``cfg.cache`` decodes every image once into a shared array first.
    """
    source = build_source(cfg)
    idx = subset_indices(len(source), cfg.limit, cfg.limit_seed)
    mode = cfg.augment
    if cfg.cache or (mode != "pil" and not isinstance(source, ArraySource)):
        from .cache import MixedSizes, decoded, fits_cache

        if isinstance(source, FileSource) and len(idx) < len(source):  # decode only the subset
            source = FileSource(source.root, [source.files[i] for i in idx], source.labels[idx], source.classes)
        if mode == "auto" and not cfg.cache and not fits_cache(source, cfg.cache_size):
            mode = "pil"
        else:
            try:
                source = decoded(source, cfg.cache_size)
                bad = np.asarray(sorted(getattr(source, "unreadable", ())), dtype=int)
                idx = np.setdiff1d(np.arange(len(source)), bad)
            except MixedSizes:
                if mode != "auto":
                    raise
                mode = "pil"  # images of several sizes and no data.cache_size: augmented one by one
    batched = mode != "pil"
    transforms = [] if batched else [view_transform(s, cfg.mean, cfg.std) for s in expand_views(cfg.views)]
    dataset = ViewDataset(source, transforms, idx)
    # what the training loop applies to its raw batches
    dataset.batch_augment = BatchedViews(cfg.views, cfg.mean, cfg.std) if batched else None
    dataset.resident = cfg.resident
    return dataset


def batch_augment(cfg: DataConfig) -> BatchedViews | None:
    """The on-device augmentation of ``cfg.augment == "batched"`` (None for the per-image path; the
    ``auto`` choice is :func:`pretrain_dataset`'s, which sets it on the dataset)."""
    return BatchedViews(cfg.views, cfg.mean, cfg.std) if cfg.augment == "batched" else None


def eval_dataset(cfg: DataConfig, size: int) -> ViewDataset:
    """Single centre-cropped view per image with labels, for kNN and feature extraction."""
    source = build_source(cfg)
    idx = subset_indices(len(source), cfg.limit, cfg.limit_seed)
    return ViewDataset(source, [eval_transform(size, cfg.mean, cfg.std)], idx)


__all__ = [
    "BatchedViews",
    "batch_augment",
    "DataError",
    "EpochSampler",
    "ImageSource",
    "ViewDataset",
    "build_source",
    "collate",
    "digits_source",
    "eval_dataset",
    "eval_transform",
    "expand_views",
    "pretrain_dataset",
    "sample_seed",
    "subset_indices",
    "view_transform",
]
