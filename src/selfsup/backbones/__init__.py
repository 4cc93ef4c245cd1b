"""Backbones: ``build_backbone(name, ...)`` returns a module mapping images to pooled features.

Every backbone has ``num_features`` (the width of its output). ResNets are torchvision's own
classes with ``fc`` replaced by an identity, so their state dict loads into the plain torchvision
model with ``load_state_dict`` and no key surgery. Importing this package registers every backbone
module in it.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

from torch import nn

from .registry import BACKBONES

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "registry":
        importlib.import_module(f"{__name__}.{_m.name}")


def build_backbone(name: str, **kwargs) -> nn.Module:
    return BACKBONES.get(name)(**kwargs)


def backbone_from_config(cfg) -> nn.Module:
    """Build from a :class:`~selfsup.config.BackboneConfig`: every field but ``name`` is passed as a
    keyword, so each registered builder accepts them all (ignoring those that do not apply)."""
    kwargs = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "name"}
    return build_backbone(cfg.name, **kwargs)


__all__ = ["BACKBONES", "backbone_from_config", "build_backbone"]
