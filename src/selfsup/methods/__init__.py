"""Self-supervised methods. Importing this package registers all of them."""

from . import simclr  # noqa: F401  (registers)
from .base import METHODS, Method, MethodConfig, Progress, StepOutput, register

__all__ = ["METHODS", "Method", "MethodConfig", "Progress", "StepOutput", "register", "build_method"]


def build_method(name: str, backbone, cfg: MethodConfig | None = None) -> Method:
    cls = METHODS.get(name)
    return cls(backbone, cfg if cfg is not None else cls.Config())
