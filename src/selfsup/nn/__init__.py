"""Shared building blocks: the one MLP builder, the EMA update, the feature queue and shuffle-BN."""

from .ema import copy_as_target, ema_update
from .mlp import mlp
from .queue import FeatureQueue
from .shuffle_bn import SplitBatchNorm, batch_shuffle, batch_unshuffle, convert_split_bn

__all__ = [
    "mlp",
    "ema_update",
    "copy_as_target",
    "FeatureQueue",
    "SplitBatchNorm",
    "batch_shuffle",
    "batch_unshuffle",
    "convert_split_bn",
]
