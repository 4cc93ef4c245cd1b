from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry

BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")
