"""Feature extraction from a frozen encoder, in one process or sharded over ``torchrun`` ranks."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .. import dist
from ..data.dataset import ViewDataset, collate
from ..precision import autocast


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: ViewDataset,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    normalize: bool = True,
    progress: bool = False,
    desc: str = "features",
    distributed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (N, D) float32, labels (N,))`` in dataset order, encoder in eval mode.

    The encoder's train/eval mode is restored afterwards. Features are l2-normalized unless
    ``normalize=False``; any module mapping images to a ``(B, D)`` tensor works (a classifier gives
    its logits). With ``distributed=True`` under an initialized process group, each rank encodes a
    contiguous shard and every rank gets back all ``N`` rows in dataset order (on one process it is
    the same as ``False``). It is a collective: every rank must call it.
    """
    device = torch.device(device) if device is not None else module_device(encoder)
    if not distributed or dist.world_size() == 1:
        return _extract(encoder, dataset, batch_size, device, num_workers, normalize, progress, desc)
    n, world, rank = len(dataset), dist.world_size(), dist.rank()
    per = math.ceil(n / world)
    bounds = [(min(n, r * per), min(n, (r + 1) * per)) for r in range(world)]
    lo, hi = bounds[rank]
    if hi > lo:
        shard = Subset(dataset, range(lo, hi))
        f, y = _extract(encoder, shard, batch_size, device, num_workers, normalize, progress, desc)
    else:  # more ranks than shards of data: this rank only pads
        f, y = torch.zeros(0, 0, device=device), torch.zeros(0, dtype=torch.long, device=device)
    dim = int(dist.gather_no_grad(torch.tensor([f.shape[1]], device=device)).max())
    padded = torch.zeros(per, dim, device=device)
    padded[: f.shape[0]] = f
    padded_y = torch.full((per,), -1, dtype=torch.long, device=device)
    padded_y[: y.shape[0]] = y
    all_f = dist.gather_no_grad(padded).split(per)
    all_y = dist.gather_no_grad(padded_y).split(per)
    keep = [b - a for a, b in bounds]
    return torch.cat([t[:k] for t, k in zip(all_f, keep)]), torch.cat([t[:k] for t, k in zip(all_y, keep)])


def module_device(module: nn.Module) -> torch.device:
    """Where ``module``'s parameters (or buffers) live; CPU for a module holding neither."""
    for t in itertools.chain(module.parameters(), module.buffers()):
        return t.device
    return torch.device("cpu")


def _extract(encoder, dataset, batch_size, device, num_workers, normalize, progress, desc):
    was_training = encoder.training
    encoder.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
    )
    feats, labels = [], []
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            x = batch["views"][0].to(device, non_blocking=True)
            with autocast(device):
                f = encoder(x)
            f = f.float()
            feats.append(F.normalize(f, dim=1) if normalize else f)
            labels.append(batch["labels"].to(device))
    finally:
        encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels)
