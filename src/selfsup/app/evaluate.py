"""The evaluation protocols from weights on disk: ``selfsup knn/linear/finetune/distill/embed/export``.

Each function loads an encoder (a run directory, ``backbone.safetensors`` or a checkpoint), builds
the datasets at the run's image size and normalization, and runs the protocol in one process or
under ``torchrun`` (every rank calls it; features are sharded over ranks and gathered; only rank 0
writes files). Results are JSON-ready dicts.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import dist
from ..backbones import backbone_from_config
from ..data import ViewDataset
from ..errors import DataError
from ..eval.distill import DistillConfig, distill_and_evaluate
from ..eval.export import EMBEDDING_FORMATS, export_encoder, save_embeddings
from ..eval.features import extract_features
from ..eval.finetune import FinetuneConfig, balanced_subset, finetune, subset_from_file
from ..eval.knn import SWEEP_K, SWEEP_T, knn_classify, knn_sweep
from ..eval.linear import LinearConfig, linear_probe
from ..eval.supervised import Classifier
from .runs import encoder_and_head, load_classifier, load_encoder, run_dataset, save_classifier, start_record


def _check_positive(**values) -> None:
    """ValueError naming the first option that is not > 0 (None: the default, skipped)."""
    for name, v in values.items():
        for x in v if isinstance(v, tuple | list) else (v,):
            if x is not None and not x > 0:
                raise ValueError(f"{name} must be > 0, got {v!r}")


def _num_classes(train: ViewDataset, test: ViewDataset) -> int:
    a, b = list(train.source.classes), list(test.source.classes)
    if a and b and a != b:
        raise DataError(f"train and test sets have different classes ({len(a)} vs {len(b)}: {a[:3]} / {b[:3]})")
    return max(len(a), len(b), int(train.labels.max()) + 1, int(test.labels.max()) + 1)


# ---------------------------------------------------------------------------------------------
# kNN and the kNN sweep


def _knn_features(weights, train, test, limit_train, limit_test, batch_size, num_workers, size, device, progress):
    """The run's config, the two datasets and their features (bank, labels, queries, labels)."""
    _check_positive(batch_size=batch_size, size=size)
    dev = dist.setup_device(device)
    encoder, cfg = load_encoder(weights)
    encoder.to(dev)
    train_ds = run_dataset(train, cfg, limit_train, size)
    test_ds = run_dataset(test, cfg, limit_test, size)
    kw = dict(progress=progress, distributed=True)
    bank = extract_features(encoder, train_ds, batch_size, dev, num_workers, desc="bank features", **kw)
    queries = extract_features(encoder, test_ds, batch_size, dev, num_workers, desc="test features", **kw)
    return cfg, train_ds, test_ds, (bank[0], bank[1], queries[0], queries[1])


def knn_from_weights(
    weights: str | Path,
    train: str,
    test: str,
    k: int | None = None,
    temperature: float | None = None,
    limit_train: int = 0,
    limit_test: int = 0,
    batch_size: int = 256,
    num_workers: int = 0,
    size: int | None = None,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """``selfsup knn``: weighted kNN of ``test`` against the bank ``train`` (default ``k`` and
    ``temperature``: the run's ``knn`` section)."""
    _check_positive(k=k, temperature=temperature)
    args = (weights, train, test, limit_train, limit_test, batch_size, num_workers, size, device, progress)
    cfg, train_ds, test_ds, features = _knn_features(*args)
    k = cfg.knn.k if k is None else k
    t = cfg.knn.temperature if temperature is None else temperature
    bank, bank_y, q, q_y = features
    res = knn_classify(bank, bank_y, q, q_y, k=k, temperature=t, num_classes=_num_classes(train_ds, test_ds))
    size = size or cfg.data.views[0].size
    return {**res, "k": k, "temperature": t, "n_train": len(train_ds), "n_test": len(test_ds), "image_size": size}


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
    progress: bool = False,
) -> dict[str, Any]:
    """``selfsup knn --sweep``: every ``(k, T)`` from one feature extraction; the best first."""
    _check_positive(ks=ks, temperatures=temperatures)
    args = (weights, train, test, limit_train, limit_test, batch_size, num_workers, size, device, progress)
    _, train_ds, test_ds, features = _knn_features(*args)
    bank, bank_y, q, q_y = features
    results = knn_sweep(bank, bank_y, q, q_y, ks, temperatures, _num_classes(train_ds, test_ds))
    best = max(results, key=lambda r: (r["top1"], r["top5"]))
    return {**best, "results": results, "n_train": len(train_ds), "n_test": len(test_ds)}


# ---------------------------------------------------------------------------------------------
# linear probe, fine-tuning, distillation


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
    train_ds = run_dataset(train, rcfg, limit_train, size, augment=augment)
    test_ds = run_dataset(test, rcfg, limit_test, size)
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
        "image_size": size or rcfg.data.views[0].size,
    }


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
    ``subset_file``; from the first ``head_layers`` of the projection head (SimCLR v2) when > 0;
    ``out`` saves the classifier (a teacher for ``selfsup distill``)."""
    if (fraction is None) == (subset_file is None):
        raise ValueError("pass exactly one of --fraction and --subset-file")
    if head_layers < 0:
        raise ValueError(f"head_layers must be >= 0, got {head_layers}")
    cfg = cfg or FinetuneConfig()
    dev = dist.setup_device(device)
    encoder, extra, rcfg = encoder_and_head(weights, head_layers)
    full = run_dataset(train, rcfg, 0, size, augment=True)
    if fraction is not None:
        pos = balanced_subset(full.labels, fraction, cfg.seed)
    else:
        assert subset_file is not None  # exactly one of the two, checked above
        pos = subset_from_file(subset_file, full.source, full.indices)
    labelled = ViewDataset(full.source, full.transforms, full.indices[pos])
    test_ds = run_dataset(test, rcfg, limit_test, size)
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


def distill_from_weights(
    teacher: str | Path,
    unlabelled: str,
    test: str,
    labelled: str | None = None,
    student: str | None = None,
    student_weights: str | Path | None = None,
    cfg: DistillConfig | None = None,
    limit_unlabelled: int = 0,
    limit_test: int = 0,
    out: str | Path | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """``selfsup distill``: the classifier ``teacher`` (from ``finetune --out``) labels ``unlabelled``
    for a student: a fresh ``student`` backbone (default: the teacher's architecture) or the
    encoder of ``student_weights``, with a new linear head; ``labelled`` mixes in cross-entropy."""
    cfg = cfg or DistillConfig()
    if cfg.labelled_weight > 0 and not labelled:
        raise ValueError("labelled_weight > 0 needs a labelled set (--labelled)")
    dev = dist.setup_device(device)
    teacher_model, tcfg, classes = load_classifier(teacher)
    if student_weights is not None:
        encoder, scfg = load_encoder(student_weights)
        backbone = scfg.backbone
    else:
        backbone = replace(tcfg.backbone, name=student) if student else tcfg.backbone
        try:
            torch.manual_seed(cfg.seed)
            encoder = backbone_from_config(backbone)
        except KeyError as e:
            raise ValueError(f"--student: {e.args[0]}") from None
    unl = run_dataset(unlabelled, tcfg, limit_unlabelled, labelled=False, augment=True)
    test_ds = run_dataset(test, tcfg, limit_test)
    if classes and test_ds.source.classes and list(test_ds.source.classes) != classes:
        raise DataError(
            f"{test}: its classes differ from the teacher's ({test_ds.source.classes[:3]} vs {classes[:3]})"
        )
    lab = run_dataset(labelled, tcfg, augment=True) if labelled else None
    student_model = Classifier(encoder, teacher_model.num_classes, seed=cfg.seed)
    res = distill_and_evaluate(teacher_model, student_model, unl, test_ds, cfg, lab, dev)
    if out is not None and dist.is_main():
        save_classifier(out, res["model"], replace(tcfg, backbone=backbone), classes, 0)
    dist.barrier()
    return {
        "top1": res["top1"],
        "top5": res["top5"],
        "teacher_top1": res["teacher_top1"],
        "teacher_top5": res["teacher_top5"],
        "student": backbone.name,
        "teacher": tcfg.backbone.name,
        "temperature": cfg.temperature,
        "labelled_weight": cfg.labelled_weight,
        "epochs": cfg.epochs,
        "n_unlabelled": len(unl),
        "n_test": len(test_ds),
        **({"out": str(out)} if out is not None else {}),
    }


# ---------------------------------------------------------------------------------------------
# embeddings and export


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
    if Path(out).suffix not in EMBEDDING_FORMATS:
        raise ValueError(f"--out {out}: embeddings are written as .npz or .pt")
    _check_positive(batch_size=batch_size, size=size)
    dev = dist.setup_device(device)
    encoder, rcfg = load_encoder(weights)
    encoder.to(dev)
    ds = run_dataset(data, rcfg, 0, size, labelled=False)
    feats, labels = extract_features(encoder, ds, batch_size, dev, num_workers, normalize, distributed=True)
    names = [ds.source.name(int(i)) for i in ds.indices]
    if dist.is_main():
        save_embeddings(out, feats, names, labels if (labels >= 0).all() else None)
    dist.barrier()
    return {"out": str(out), "n": len(names), "dim": feats.shape[1], "normalized": normalize}


def export_from_weights(weights: str | Path, out: str | Path, fmt: str = "safetensors") -> dict[str, Any]:
    """``selfsup export``: the evaluated encoder of a run or checkpoint as safetensors, or as a folder
    for timm or torchvision (:mod:`selfsup.app.exports`)."""
    if fmt != "safetensors":
        from .exports import export_folder

        return export_folder(weights, out, fmt)
    encoder, cfg = load_encoder(weights)
    export_encoder(encoder, out, cfg.to_dict(), start=start_record(weights))
    return {"out": str(out), "backbone": cfg.backbone.name, "tensors": len(encoder.state_dict())}
