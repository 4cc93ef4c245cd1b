"""Pure, typed, gather-aware losses shared by methods."""

from .cosine import negative_cosine, normalized_mse
from .ntxent import nt_xent

__all__ = ["negative_cosine", "normalized_mse", "nt_xent"]
