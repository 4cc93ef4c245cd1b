"""Backbones: ``build_backbone(name, ...)`` returns a module mapping images to pooled features.

Every backbone has ``num_features`` (the width of its output). ResNets are torchvision's own
classes with ``fc`` replaced by an identity, so their state dict loads into the plain torchvision
model with ``load_state_dict`` and no key surgery. Importing this package registers every backbone
module in it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

from torch import nn

from .registry import BACKBONES

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "registry":
        importlib.import_module(f"{__name__}.{_m.name}")


def build_backbone(name: str, **kwargs) -> nn.Module:
    return BACKBONES.get(name)(**kwargs)


def backbone_from_config(cfg) -> nn.Module:
    """Build from a :class:`~selfsup.config.BackboneConfig`: the fields the builder takes are passed
    as keywords. A field it does not take must keep its default (``backbone.pos_embed=sincos`` on a
    ResNet would otherwise be silently ignored): a ValueError names it. The starting weights
    (``weights``, ``pretrained``) are not the architecture's: the application layer loads them."""
    builder = BACKBONES.get(cfg.name)
    accepted = inspect.signature(builder).parameters
    kwargs, defaults = {}, type(cfg)()
    for f in dataclasses.fields(cfg):
        if f.name in ("name", "weights", "pretrained"):
            continue
        value = getattr(cfg, f.name)
        if f.name in accepted:
            kwargs[f.name] = value
        elif value != getattr(defaults, f.name):
            raise ValueError(f"backbone.{f.name}={value!r} does not apply to backbone {cfg.name!r}")
    return builder(**kwargs)


__all__ = ["BACKBONES", "backbone_from_config", "build_backbone"]
