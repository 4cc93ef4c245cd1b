"""Pure, typed, gather-aware losses shared by methods."""

from .cosine import negative_cosine, normalized_mse
from .infonce import info_nce_batch, info_nce_queue
from .ntxent import nt_xent

__all__ = ["info_nce_batch", "info_nce_queue", "negative_cosine", "normalized_mse", "nt_xent"]
