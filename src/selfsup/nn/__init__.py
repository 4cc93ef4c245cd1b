"""Shared building blocks: the one MLP builder and the EMA update."""

from .ema import copy_as_target, ema_update
from .mlp import mlp

__all__ = ["mlp", "ema_update", "copy_as_target"]
