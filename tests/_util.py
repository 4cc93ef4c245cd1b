"""Helpers shared by the tests: tiny synthetic data and tiny configs for any registered method."""

from __future__ import annotations

import numpy as np
import torch

from selfsup.config import Config, ViewSpec, list_presets, load_config
from selfsup.data import ViewDataset, expand_views, view_transform
from selfsup.data.sources import ArraySource
from selfsup.methods import METHODS


def blob_images(n: int, size: int = 16, classes: int = 4, seed: int = 0) -> ArraySource:
    """``n`` RGB images: a class-coloured square on noise, at a random place (labels kept)."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(0, 256, size=(classes, 3))
    labels = np.arange(n) % classes
    img = rng.integers(0, 80, size=(n, size, size, 3)).astype(np.uint8)
    for i, y in enumerate(labels):
        s = size // 2
        r, c = rng.integers(0, size - s + 1, size=2)
        img[i, r : r + s, c : c + s] = colors[y]
    return ArraySource(img, labels, [str(c) for c in range(classes)], "blobs")


def preset_for(method: str) -> str:
    """The CIFAR-10 preset of a registered method (any of its presets if it has none)."""
    ours = [p for p in list_presets() if load_config(p).method.name == method]
    assert ours, f"method {method!r} has no preset; every registered method ships at least one"
    cifar = [p for p in ours if "cifar10" in p]
    return (cifar or ours)[0]


def tiny_config(method: str, size: int = 16, batch: int = 8, extra: list[str] | None = None) -> Config:
    """The method's preset with a ResNet-10, ``size``-pixel views (smaller views scaled alike),
    batch ``batch``, no warm-up, fp32 on CPU (comparisons to the last bit), no progress bar."""
    cfg = load_config(
        preset_for(method),
        [
            "backbone.name=resnet10",
            "backbone.cifar_stem=false",
            f"train.batch_size={batch}",
            "train.epochs=1",
            "train.device=cpu",
            "train.precision=fp32",
            "train.progress=false",
            "train.log_every=1",
            "optim.warmup_epochs=0",
            "data.num_workers=0",
            *(extra or []),
        ],
    )
    top = max(v.size for v in cfg.data.views)
    cfg.data.views = [ViewSpec(**{**v.__dict__, "size": max(8, round(v.size * size / top))}) for v in cfg.data.views]
    return cfg


def tiny_dataset(cfg: Config, n: int = 16, seed: int = 0) -> ViewDataset:
    src = blob_images(n, size=2 * max(v.size for v in cfg.data.views), seed=seed)
    return ViewDataset(src, [view_transform(s) for s in expand_views(cfg.data.views)])


def tiny_views(cfg: Config, batch: int = 8, seed: int = 0) -> list[torch.Tensor]:
    ds = tiny_dataset(cfg, batch, seed)
    items = [ds[(i, seed * 1000 + i)][0] for i in range(batch)]
    return [torch.stack([it[v] for it in items]) for v in range(len(items[0]))]


def registered_methods() -> list[str]:
    return METHODS.names()
