"""Data: image sources, per-view augmentation, the resumable sampler."""

from __future__ import annotations

from ..config import DataConfig
from .dataset import EpochSampler, ViewDataset, collate, sample_seed
from .sources import DataError, ImageSource, build_source, digits_source, subset_indices
from .views import eval_transform, expand_views, view_transform


def pretrain_dataset(cfg: DataConfig) -> ViewDataset:
    """The multi-view dataset a pretraining run draws from (``cfg.limit`` applied)."""
    source = build_source(cfg)
    idx = subset_indices(len(source), cfg.limit, cfg.limit_seed)
    return ViewDataset(source, [view_transform(s) for s in expand_views(cfg.views)], idx)


def eval_dataset(cfg: DataConfig, size: int) -> ViewDataset:
    """Single centre-cropped view per image with labels, for kNN and feature extraction."""
    source = build_source(cfg)
    idx = subset_indices(len(source), cfg.limit, cfg.limit_seed)
    spec = cfg.views[0]
    return ViewDataset(source, [eval_transform(size, spec.mean, spec.std)], idx)


__all__ = [
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
