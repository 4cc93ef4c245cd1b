"""Pure, typed, gather-aware losses shared by methods."""

from .ntxent import nt_xent

__all__ = ["nt_xent"]
