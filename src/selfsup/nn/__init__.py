"""Shared building blocks: the one MLP builder, the EMA update, the feature queue, shuffle-BN, the
multi-crop forward and Sinkhorn-Knopp."""

from .ema import copy_as_target, ema_update
from .masking import BlockMasking, batch_block_masks
from .mlp import mlp, projection_head_layers
from .multicrop import multicrop_forward
from .queue import FeatureQueue
from .shuffle_bn import SplitBatchNorm, batch_shuffle, batch_unshuffle, convert_split_bn
from .sinkhorn import sinkhorn

__all__ = [
    "mlp",
    "projection_head_layers",
    "ema_update",
    "copy_as_target",
    "FeatureQueue",
    "SplitBatchNorm",
    "batch_shuffle",
    "batch_unshuffle",
    "convert_split_bn",
    "multicrop_forward",
    "BlockMasking",
    "batch_block_masks",
    "sinkhorn",
]
