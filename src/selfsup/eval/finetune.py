"""Semi-supervised fine-tuning: the whole network trained on a small fraction of the labels.

The protocol of SimCLR (Chen et al. 2020, arXiv:2002.05709, appendix B.5): 1% or 10% of the
labelled training set, class-balanced, the backbone plus a linear head trained end to end with
Nesterov momentum (base lr 0.05 x batch/256, no weight decay, no warm-up) for 60 epochs (1%) or 30
(10%), on random resized crops and flips; BatchNorm in training mode (global under ``torchrun``).
Evaluated on centre crops of the full test set.

SimCLR v2 (Chen et al. 2020, arXiv:2006.10029, sec. 2) fine-tunes from the first layer of its
3-layer projection head instead of from the backbone: pass those layers as ``extra``
(:meth:`selfsup.methods.Method.head_layers`, the method's own declaration).

The published ImageNet subsets (SimCLR's ``1percent.txt`` / ``10percent.txt``) are lists of image
file names; :func:`subset_from_file` selects them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import ViewDataset
from ..data.sources import DataError, ImageSource
from .supervised import Classifier, TrainSettings, evaluate, train_network


@dataclass
class FinetuneConfig(TrainSettings):
    """SimCLR's fine-tuning recipe; ``epochs=0`` picks 60 for <= 1% of the labels, else 30."""

    epochs: int = 0  # 0: 60 for <= 1% of the labels, else 30 (SimCLR)
    lr: float = 0.05  # base learning rate, x batch/256
    nesterov: bool = True

    def resolved_epochs(self, fraction: float) -> int:
        return self.epochs if self.epochs > 0 else (60 if fraction <= 0.01 + 1e-9 else 30)


def balanced_subset(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted indices of a class-balanced ``fraction`` of a labelled set, the same for the same seed.

    Every class gets ``round(fraction x N / C)`` images (at least 1; all of a class that has fewer),
    drawn uniformly within the class by a generator seeded with ``seed``.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    if (labels < 0).any():
        raise DataError("a class-balanced subset needs labels (an ImageFolder tree)")
    classes = np.unique(labels)
    per_class = max(1, int(round(fraction * len(labels) / len(classes))))
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        perm = torch.randperm(len(members), generator=g).numpy()
        chosen.append(members[perm[:per_class]])
    return np.sort(np.concatenate(chosen))


def subset_from_file(path: str | Path, source: ImageSource, indices: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices (into ``indices``, default all of ``source``) of the images a list file names.

    One name per line, as SimCLR's ImageNet subsets (``n01440764_10026.JPEG``): a bare file name
    matches the image of that name in any class folder; a path matches the relative path. Blank
    lines and ``#`` comments are ignored; a name matching no image is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"subset file not found: {path}")
    wanted = [ln.strip() for ln in path.read_text().splitlines()]
    wanted = [w for w in wanted if w and not w.startswith("#")]
    if not wanted:
        raise DataError(f"{path}: no image names in the subset file")
    indices = np.arange(len(source)) if indices is None else np.asarray(indices)
    by_name: dict[str, list[int]] = {}
    for pos, i in enumerate(indices):
        rel = source.name(int(i)).replace("\\", "/")
        by_name.setdefault(rel, []).append(pos)
        by_name.setdefault(rel.rsplit("/", 1)[-1], []).append(pos)
    missing = [w for w in wanted if w.replace("\\", "/") not in by_name]
    if missing:
        raise DataError(f"{path}: {len(missing)} of {len(wanted)} names match no image, e.g. {missing[0]!r}")
    return np.unique(np.concatenate([by_name[w.replace("\\", "/")] for w in wanted]))


def finetune(
    encoder: nn.Module,
    train: ViewDataset,
    test: ViewDataset,
    num_classes: int,
    cfg: FinetuneConfig | None = None,
    extra: nn.Module | None = None,
    device: torch.device | str | None = None,
    fraction: float = 0.01,
) -> dict:
    """Fine-tune a copy of ``encoder`` (and ``extra`` layers) with a linear head on ``train``.

    ``train`` is the labelled subset with its training augmentation (see
    :func:`balanced_subset` / :func:`subset_from_file`); ``fraction`` only picks the default epochs.
    Returns ``{"top1", "top5", "model"}`` with the trained :class:`Classifier` on ``test``. Under
    ``torchrun`` every rank must call this.
    """
    cfg = cfg or FinetuneConfig()
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    model = Classifier(copy.deepcopy(encoder), num_classes, copy.deepcopy(extra), seed=cfg.seed)
    settings = copy.copy(cfg)
    settings.epochs = cfg.resolved_epochs(fraction)
    model = train_network(model, train, settings, lambda net, x, y: F.cross_entropy(net(x), y), device)
    return {**evaluate(model, test, num_workers=cfg.num_workers), "model": model, "epochs": settings.epochs}
