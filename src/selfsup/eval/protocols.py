"""The evaluation protocols from weights on disk: what ``selfsup linear/finetune/distill/embed/
export`` and ``knn --sweep`` run.

Each function loads an encoder (a run directory, ``backbone.safetensors`` or a checkpoint), builds
the datasets at the run's image size and normalization, and runs the protocol in one process or
under ``torchrun`` (every rank calls it; features are sharded over ranks and gathered; only rank 0
writes files). Results are JSON-ready dicts.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import dist
from ..api import BUILTIN_SOURCES as BUILTIN
from ..api import build_from_config, labelled_eval_dataset, load_encoder
from ..backbones import backbone_from_config
from ..config import Config, ConfigError, DataConfig, ViewSpec, from_dict
from ..data import ViewDataset, eval_dataset
from ..data.sources import DataError
from ..train.checkpoint import load_checkpoint, save_checkpoint
from .distill import DistillConfig, distill_and_evaluate
from .export import export_encoder, save_embeddings
from .features import extract_features
from .finetune import FinetuneConfig, balanced_subset, finetune, projection_head_layers, subset_from_file
from .knn import SWEEP_K, SWEEP_T, knn_sweep
from .linear import LinearConfig, linear_probe
from .supervised import Classifier, train_transform

CLASSIFIER_FORMAT = "selfsup-classifier"


def _record(cfg: Config) -> dict[str, Any]:
    return json.loads(json.dumps(cfg.to_dict()))


def _view(cfg: Config, size: int | None) -> tuple[int, tuple, tuple]:
    v = cfg.data.views[0]
    return size or v.size, tuple(v.mean), tuple(v.std)


def labelled_dataset(path: str, cfg: Config, limit: int = 0, size: int | None = None, augment: bool = False):
    """An ImageFolder tree (or ``digits:train``, ``cifar10:test:ROOT``...) at the run's size and
    normalization: centre crops, or random resized crops and flips with ``augment``."""
    size, mean, std = _view(cfg, size)
    ds = labelled_eval_dataset(path, size, limit, mean, std)
    return ViewDataset(ds.source, [train_transform(size, mean, std)], ds.indices) if augment else ds


def image_dataset(path: str, cfg: Config, limit: int = 0, size: int | None = None, augment: bool = False):
    """Like :func:`labelled_dataset`, but a plain folder of images (no labels) is accepted too."""
    if path.split(":")[0] in BUILTIN:
        return labelled_dataset(path, cfg, limit, size, augment)
    size, mean, std = _view(cfg, size)
    spec = ViewSpec(size=size, mean=mean, std=std)
    ds = eval_dataset(DataConfig(source="auto", path=path, limit=limit, views=[spec]), size)
    ds.check_readable()
    return ViewDataset(ds.source, [train_transform(size, mean, std)], ds.indices) if augment else ds


def _num_classes(train: ViewDataset, test: ViewDataset) -> int:
    a, b = list(train.source.classes), list(test.source.classes)
    if a and b and a != b:
        raise DataError(f"train and test sets have different classes ({len(a)} vs {len(b)}: {a[:3]} / {b[:3]})")
    return max(len(a), len(b), int(train.labels.max()) + 1, int(test.labels.max()) + 1)


# ---------------------------------------------------------------------------------------------
# linear probe


def linear_from_weights(
    weights: str | Path,
    train: str,
    test: str,
    cfg: LinearConfig | None = None,
    augment: bool | None = None,
    limit_train: int = 0,
    limit_test: int = 0,
    size: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """``selfsup linear``. ``augment=None``: the standard protocol on a GPU, the fast one on CPU."""
    cfg = cfg or LinearConfig()
    dev = dist.setup_device(device)
    encoder, rcfg = load_encoder(weights)
    augment = dev.type != "cpu" if augment is None else augment
    train_ds = labelled_dataset(train, rcfg, limit_train, size, augment)
    test_ds = labelled_dataset(test, rcfg, limit_test, size)
    res = linear_probe(encoder, train_ds, test_ds, _num_classes(train_ds, test_ds), cfg, augment, dev)
    return {
        "top1": res["top1"],
        "top5": res["top5"],
        "variant": "augment" if augment else "fast",
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "optimizer": cfg.optimizer,
        "bn": cfg.bn,
        "n_train": len(train_ds),
        "n_test": len(test_ds),
        "image_size": _view(rcfg, size)[0],
    }


# ---------------------------------------------------------------------------------------------
# fine-tuning and the classifiers it writes


def _checkpoint_path(weights: str | Path) -> Path:
    p = Path(weights)
    if p.is_dir():
        p = p / "checkpoints" / "last.pt"
    if p.suffix == ".safetensors":
        raise ValueError(f"{weights}: an exported backbone holds no projection head; pass the run or its checkpoint")
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    return p


def _method_from_checkpoint(path: Path) -> tuple[nn.Module, Config]:
    state = load_checkpoint(path)
    try:
        cfg = from_dict(Config, state.get("config", {}))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    method = build_from_config(cfg)
    method.load_state_dict(state["model"])
    return method, cfg


def _head_layers(method: nn.Module, layers: int) -> nn.Sequential:
    head = getattr(method, "projector", None)
    if not isinstance(head, nn.Sequential):
        raise ValueError(f"method {type(method).__name__} has no MLP projection head ('projector') to fine-tune from")
    return projection_head_layers(head, layers)


def encoder_and_head(weights: str | Path, head_layers: int = 0) -> tuple[nn.Module, nn.Module | None, Config]:
    """The evaluated encoder, the first ``head_layers`` of the projection head (SimCLR v2; needs a
    checkpoint) or None, and the run's config."""
    if head_layers <= 0:
        encoder, cfg = load_encoder(weights)
        return encoder, None, cfg
    method, cfg = _method_from_checkpoint(_checkpoint_path(weights))
    return method.encoder, _head_layers(method, head_layers), cfg


def save_classifier(path: str | Path, model: Classifier, cfg: Config, classes: list[str], head_layers: int) -> None:
    """A fine-tuned or distilled classifier, loadable with :func:`load_classifier` (``weights_only``)."""
    state = {
        "format": CLASSIFIER_FORMAT,
        "config": _record(cfg),
        "classes": list(classes),
        "num_classes": model.num_classes,
        "head_layers": head_layers,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    save_checkpoint(Path(path), state)


def load_classifier(path: str | Path) -> tuple[Classifier, Config, list[str]]:
    """``(classifier, config, class names)`` from a file written by ``selfsup finetune/distill --out``."""
    state = load_checkpoint(Path(path))
    if state.get("format") != CLASSIFIER_FORMAT:
        raise ValueError(f"{path}: not a classifier written by `selfsup finetune --out` or `selfsup distill --out`")
    try:
        cfg = from_dict(Config, state["config"])
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    layers = int(state["head_layers"])
    if layers > 0:
        method = build_from_config(cfg)
        encoder, extra = method.encoder, _head_layers(method, layers)
    else:
        encoder, extra = backbone_from_config(cfg.backbone), None
    model = Classifier(encoder, int(state["num_classes"]), extra)
    model.load_state_dict(state["model"])
    return model.eval(), cfg, list(state["classes"])


def finetune_from_weights(
    weights: str | Path,
    train: str,
    test: str,
    fraction: float | None = None,
    subset_file: str | Path | None = None,
    cfg: FinetuneConfig | None = None,
    head_layers: int = 0,
    limit_test: int = 0,
    size: int | None = None,
    out: str | Path | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """``selfsup finetune``: a class-balanced ``fraction`` (seed ``cfg.seed``) or the images named in
    ``subset_file``; ``out`` saves the classifier (a teacher for ``selfsup distill``)."""
    if (fraction is None) == (subset_file is None):
        raise ValueError("pass exactly one of --fraction and --subset-file")
    cfg = cfg or FinetuneConfig()
    dev = dist.setup_device(device)
    encoder, extra, rcfg = encoder_and_head(weights, head_layers)
    full = labelled_dataset(train, rcfg, 0, size, augment=True)
    if fraction is not None:
        pos = balanced_subset(full.labels, fraction, cfg.seed)
    else:
        pos = subset_from_file(subset_file, full.source, full.indices)
    labelled = ViewDataset(full.source, full.transforms, full.indices[pos])
    test_ds = labelled_dataset(test, rcfg, limit_test, size)
    n_cls = _num_classes(full, test_ds)
    frac = len(labelled) / len(full) if fraction is None else fraction
    res = finetune(encoder, labelled, test_ds, n_cls, cfg, extra, dev, frac)
    if out is not None and dist.is_main():
        save_classifier(out, res["model"], rcfg, full.source.classes, head_layers)
    dist.barrier()
    return {
        "top1": res["top1"],
        "top5": res["top5"],
        "n_labelled": len(labelled),
        "fraction": round(len(labelled) / len(full), 6),
        "per_class": np.bincount(labelled.labels, minlength=n_cls).tolist() if n_cls <= 20 else None,
        "epochs": res["epochs"],
        "head_layers": head_layers,
        "n_test": len(test_ds),
        **({"out": str(out)} if out is not None else {}),
    }


# ---------------------------------------------------------------------------------------------
# distillation


def distill_from_weights(
    teacher: str | Path,
    unlabeled: str,
    test: str,
    labeled: str | None = None,
    student: str | None = None,
    student_weights: str | Path | None = None,
    cfg: DistillConfig | None = None,
    limit_unlabeled: int = 0,
    limit_test: int = 0,
    out: str | Path | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """``selfsup distill``: the classifier ``teacher`` (from ``finetune --out``) labels ``unlabeled``
    for a student: a fresh ``student`` backbone (default: the teacher's architecture) or the
    encoder of ``student_weights``, with a new linear head."""
    cfg = cfg or DistillConfig()
    dev = dist.setup_device(device)
    teacher_model, tcfg, classes = load_classifier(teacher)
    if student_weights is not None:
        encoder, scfg = load_encoder(student_weights)
        sb = scfg.backbone
    else:
        sb = replace(tcfg.backbone, name=student) if student else tcfg.backbone
        try:
            torch.manual_seed(cfg.seed)
            encoder = backbone_from_config(sb)
        except KeyError as e:
            raise ValueError(f"--student: {e.args[0]}") from None
    unl = image_dataset(unlabeled, tcfg, limit_unlabeled, augment=True)
    test_ds = labelled_dataset(test, tcfg, limit_test)
    if classes and test_ds.source.classes and list(test_ds.source.classes) != classes:
        raise DataError(
            f"{test}: its classes differ from the teacher's ({test_ds.source.classes[:3]} vs {classes[:3]})"
        )
    lab = labelled_dataset(labeled, tcfg, augment=True) if labeled else None
    student_model = Classifier(encoder, teacher_model.num_classes, seed=cfg.seed)
    res = distill_and_evaluate(teacher_model, student_model, unl, test_ds, cfg, lab, dev)
    if out is not None and dist.is_main():
        save_classifier(out, res["model"], replace(tcfg, backbone=sb), classes, 0)
    dist.barrier()
    return {
        "top1": res["top1"],
        "top5": res["top5"],
        "teacher_top1": res["teacher_top1"],
        "teacher_top5": res["teacher_top5"],
        "student": sb.name,
        "teacher": tcfg.backbone.name,
        "temperature": cfg.temperature,
        "labeled_weight": cfg.labeled_weight,
        "epochs": cfg.epochs,
        "n_unlabeled": len(unl),
        "n_test": len(test_ds),
        **({"out": str(out)} if out is not None else {}),
    }


# ---------------------------------------------------------------------------------------------
# kNN sweep, embeddings, export


def knn_sweep_from_weights(
    weights: str | Path,
    train: str,
    test: str,
    ks: tuple[int, ...] = SWEEP_K,
    temperatures: tuple[float, ...] = SWEEP_T,
    limit_train: int = 0,
    limit_test: int = 0,
    batch_size: int = 256,
    num_workers: int = 0,
    size: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """``selfsup knn --sweep``: every ``(k, T)`` from one feature extraction; the best first."""
    dev = dist.setup_device(device)
    encoder, rcfg = load_encoder(weights)
    encoder.to(dev)
    train_ds = labelled_dataset(train, rcfg, limit_train, size)
    test_ds = labelled_dataset(test, rcfg, limit_test, size)
    n_cls = _num_classes(train_ds, test_ds)
    bank, bank_y = extract_features(encoder, train_ds, batch_size, dev, num_workers, distributed=True)
    q, q_y = extract_features(encoder, test_ds, batch_size, dev, num_workers, distributed=True)
    results = knn_sweep(bank, bank_y, q, q_y, ks, temperatures, n_cls)
    best = max(results, key=lambda r: (r["top1"], r["top5"]))
    return {**best, "results": results, "n_train": len(train_ds), "n_test": len(test_ds)}


def embed_from_weights(
    weights: str | Path,
    data: str,
    out: str | Path,
    normalize: bool = False,
    batch_size: int = 256,
    num_workers: int = 0,
    size: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """``selfsup embed``: one feature row per image of ``data`` with its name (and label, if any)."""
    if Path(out).suffix not in (".npz", ".pt"):
        raise ValueError(f"--out {out}: embeddings are written as .npz or .pt")
    dev = dist.setup_device(device)
    encoder, rcfg = load_encoder(weights)
    encoder.to(dev)
    ds = image_dataset(data, rcfg, 0, size)
    feats, labels = extract_features(encoder, ds, batch_size, dev, num_workers, normalize, distributed=True)
    names = [ds.source.name(int(i)) for i in ds.indices]
    if dist.is_main():
        save_embeddings(out, feats, names, labels if (labels >= 0).all() else None)
    dist.barrier()
    return {"out": str(out), "n": len(names), "dim": feats.shape[1], "normalized": normalize}


def export_from_weights(weights: str | Path, out: str | Path) -> dict[str, Any]:
    """``selfsup export``: the evaluated encoder of a run or checkpoint as safetensors."""
    encoder, cfg = load_encoder(weights)
    export_encoder(encoder, out, _record(cfg))
    return {"out": str(out), "backbone": cfg.backbone.name, "tensors": len(encoder.state_dict())}
