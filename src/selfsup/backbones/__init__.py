"""Backbones: ``build_backbone(name, ...)`` returns a module mapping images to pooled features.

Every backbone has ``num_features`` (the width of its output). ResNets are torchvision's own
classes with ``fc`` replaced by an identity, so their state dict loads into the plain torchvision
model with ``load_state_dict`` and no key surgery.
"""

from __future__ import annotations

from torch import nn

from . import resnet  # noqa: F401  (registers)
from .registry import BACKBONES


def build_backbone(name: str, **kwargs) -> nn.Module:
    return BACKBONES.get(name)(**kwargs)


__all__ = ["BACKBONES", "build_backbone"]
