"""Pure, typed, gather-aware losses: every method's loss, one function each, tested against an
independent formula (methods import them; what is method mechanics, such as queues, centers or
Sinkhorn codes, stays with the method or in nn/)."""

from .barlow import barlow_twins_loss, cross_correlation
from .cosine import negative_cosine, normalized_mse
from .dino import dino_loss
from .infonce import info_nce_batch, info_nce_queue
from .ntxent import nt_xent
from .swav import swav_loss

__all__ = [
    "barlow_twins_loss",
    "cross_correlation",
    "dino_loss",
    "info_nce_batch",
    "info_nce_queue",
    "negative_cosine",
    "normalized_mse",
    "nt_xent",
    "swav_loss",
]
