"""Self-supervised methods. Importing this package registers every method module in it."""

import importlib
import pkgutil

from .base import METHODS, Method, MethodConfig, Progress, StepOutput, register

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "stats"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["METHODS", "Method", "MethodConfig", "Progress", "StepOutput", "register", "build_method"]


def build_method(name: str, backbone, cfg: MethodConfig | None = None) -> Method:
    cls = METHODS.get(name)
    return cls(backbone, cfg if cfg is not None else cls.Config())
