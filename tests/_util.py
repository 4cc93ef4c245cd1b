"""Helpers shared by the tests: tiny data, configs and methods, one training step, loop references of losses."""

from __future__ import annotations

import math

import numpy as np
import torch

from selfsup.backbones import build_backbone
from selfsup.config import Config, ViewSpec, list_presets, load_config
from selfsup.data import ViewDataset, expand_views, view_transform
from selfsup.data.sources import ArraySource
from selfsup.methods import METHODS, Progress, build_method
from selfsup.train.optim import build_optimizer


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
    """The method's preset with a ResNet-10 (a 2-block ViT-Tiny/4 where the preset's backbone is a ViT:
    MAE needs one), ``size``-pixel views (smaller views scaled alike), batch ``batch``, no warm-up, fp32 on
    CPU (comparisons to the last bit), no progress bar."""
    preset = preset_for(method)
    if load_config(preset).backbone.name.startswith("vit"):
        backbone = ["backbone.name=vit_tiny_patch4", "backbone.num_heads=0", "backbone.depth=2"]
    else:
        backbone = ["backbone.name=resnet10", "backbone.cifar_stem=false"]
    cfg = load_config(
        preset,
        [
            *backbone,
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
    return ViewDataset(src, [view_transform(s, cfg.data.mean, cfg.data.std) for s in expand_views(cfg.data.views)])


def tiny_views(cfg: Config, batch: int = 8, seed: int = 0) -> list[torch.Tensor]:
    ds = tiny_dataset(cfg, batch, seed)
    items = [ds[(i, seed * 1000 + i)][0] for i in range(batch)]
    return [torch.stack([it[v] for it in items]) for v in range(len(items[0]))]


def registered_methods() -> list[str]:
    return METHODS.names()


# ---------------------------------------------------------------------------------------------
# the methods' tests: a method on a tiny backbone, and one training step as the loop takes it


def _tiny(name, cfg, backbone="resnet10"):
    torch.manual_seed(0)
    return build_method(name, build_backbone(backbone), cfg)


def _step(method, cfg, epoch: float):
    """One training step as the loop does it (hooks, backward, optimizer) at ``epoch``."""
    progress = Progress(int(epoch * 10), 100, 10)
    opt = build_optimizer(method.param_groups(), cfg.optim, 0.5)
    method.on_step(progress)
    method(tiny_views(cfg)).loss.backward()
    method.after_backward(progress)
    opt.step()


# ---------------------------------------------------------------------------------------------
# loop references of the losses, shared by the loss and the method tests


def _unit(x):
    return x / x.norm(dim=1, keepdim=True)


def ref_info_nce_queue(q, k, queue, t):
    q, k, queue = _unit(q), _unit(k), _unit(queue)
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ queue[j]) / t) for j in range(queue.shape[0]))
        total -= math.log(pos / (pos + neg))
    return total / q.shape[0]


def ref_info_nce_batch(q, k, t):
    q, k = _unit(q), _unit(k)
    total = 0.0
    for i in range(q.shape[0]):
        den = sum(math.exp(float(q[i] @ k[j]) / t) for j in range(k.shape[0]))
        total -= math.log(math.exp(float(q[i] @ k[i]) / t) / den)
    return total / q.shape[0]


def ref_ntxent_with_negatives(z1, z2, neg, t):
    z, neg = _unit(torch.cat([z1, z2])), _unit(neg)
    n2 = z.shape[0]
    total = 0.0
    for i in range(n2):
        pos = math.exp(float(z[i] @ z[(i + n2 // 2) % n2]) / t)
        den = sum(math.exp(float(z[i] @ z[j]) / t) for j in range(n2) if j != i)
        den += sum(math.exp(float(z[i] @ neg[j]) / t) for j in range(neg.shape[0]))
        total -= math.log(pos / den)
    return total / n2


def _loop_barlow(a: torch.Tensor, b: torch.Tensor, lambd: float) -> tuple[list[list[float]], float]:
    n, d = a.shape
    c = [[sum(a[k, i].item() * b[k, j].item() for k in range(n)) / n for j in range(d)] for i in range(d)]
    loss = 0.0
    for i in range(d):
        for j in range(d):
            loss += (1 - c[i][j]) ** 2 if i == j else lambd * c[i][j] ** 2
    return c, loss
