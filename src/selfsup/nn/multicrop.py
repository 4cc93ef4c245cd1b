"""Multi-crop forward: one backbone pass per crop resolution, not one per crop.

Multi-crop (Caron et al., SwAV, arXiv:2006.09882, sec. 3.2) trains on 2 global views plus V small
local ones. As in DINO's ``MultiCropWrapper`` (and SwAV's ``forward``), consecutive views of the same
shape are concatenated and go through the backbone together, so 2 x 224 + 10 x 96 crops cost two
passes. BatchNorm statistics are then those of each resolution group, as in the official code.
ViTs take any size divisible by their patch size (timm's ``dynamic_img_size`` resamples the position
embedding), ResNets any size. The view specs themselves (sizes, scales, per-view blur and
solarization) live in the presets as :class:`~selfsup.config.ViewSpec` lists.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def resolution_groups(views: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: runs of consecutive views with the same ``(C, H, W)``."""
    groups: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(views) + 1):
        if i == len(views) or views[i].shape[1:] != views[start].shape[1:]:
            groups.append((start, i))
            start = i
    return groups


def multicrop_forward(backbone: nn.Module, views: Sequence[torch.Tensor]) -> torch.Tensor:
    """``backbone`` features of every view, ``(sum of batch sizes, D)``, concatenated in view order.

    Each run of consecutive same-shaped views is one backbone call on their concatenation.
    """
    if not views:
        raise ValueError("multicrop_forward needs at least one view")
    out = [backbone(torch.cat(list(views[a:b])) if b - a > 1 else views[a]) for a, b in resolution_groups(views)]
    return torch.cat(out) if len(out) > 1 else out[0]
