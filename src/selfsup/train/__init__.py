"""The training loop, optimizers, schedules and checkpoints."""

from ..errors import NonFiniteLossError
from .checkpoint import export_backbone, load_checkpoint, save_checkpoint
from .loop import FitResult, fit
from .optim import LARS, build_optimizer, build_schedule, cosine_schedule, scaled_lr

__all__ = [
    "LARS",
    "FitResult",
    "NonFiniteLossError",
    "build_optimizer",
    "build_schedule",
    "cosine_schedule",
    "export_backbone",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
    "scaled_lr",
]
