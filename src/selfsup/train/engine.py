"""The plumbing that pretraining and the supervised protocols share: the module wrapped for
several processes (SyncBatchNorm where asked, DDP, ``torch.compile``) and the rank-sharded loader."""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import dist
from ..config import TrainConfig
from ..data.dataset import EpochSampler, ResidentBatches, ViewDataset, collate
from ..errors import ConfigError
from ..nn.syncbn import convert_sync_batchnorm


def wrap_model(
    module: nn.Module, device: torch.device, *, sync_bn: bool, channels_last: bool = False, compile: bool = False
) -> tuple[nn.Module, nn.Module]:
    """``(module, model)``: ``module`` on ``device`` (its BatchNorms synchronized across processes when
    ``sync_bn``), and ``model``, what the loop calls: DDP over ``module`` under several processes, then
    compiled when asked. Hooks, state dicts and the optimizer use ``module``."""
    module.to(device)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    model = module
    if dist.world_size() > 1:
        if sync_bn:
            module = model = convert_sync_batchnorm(module, device)
        model = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None
        )
    if compile:
        model = torch.compile(model)
    return module, model


def rank_loader(
    dataset: Dataset, sampler: Sampler, batch_size: int, num_workers: int, device: torch.device, seed: int
) -> DataLoader | ResidentBatches:
    """This process's batches in ``sampler``'s order: indexed on the device when the dataset is raw
    images in memory that fit there (:class:`ResidentBatches`), else a DataLoader (pinned for CUDA)."""
    if isinstance(dataset, ViewDataset) and isinstance(sampler, EpochSampler) and ResidentBatches.fits(dataset, device):
        return ResidentBatches(dataset, sampler, batch_size, device)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        drop_last=False,
        persistent_workers=False,
        # its own generator: starting an epoch must not draw from the global RNG that methods use
        generator=torch.Generator().manual_seed(seed),
    )


def micro_batch(train: TrainConfig, world: int) -> int:
    """This process's micro-batch: the global batch split over processes and accumulation steps."""
    if train.batch_size % world:
        raise ConfigError(f"train.batch_size={train.batch_size} is not divisible by the {world} processes")
    per_rank = train.batch_size // world
    if per_rank % train.accum_steps:
        raise ConfigError(f"train.accum_steps={train.accum_steps} does not divide the per-process batch {per_rank}")
    micro = per_rank // train.accum_steps
    if train.accum_steps > 1:
        warnings.warn(
            f"train.accum_steps={train.accum_steps}: gradients are accumulated, but batch statistics (BatchNorm, "
            f"negatives, cross-correlations) cover micro-batches of {micro} images, not the whole batch",
            stacklevel=3,
        )
    return micro
