"""The public, high-level API: what the CLI does, as functions.

>>> import selfsup
>>> cfg = selfsup.load_config("simclr-cifar10", ["train.epochs=1"])
>>> cfg.method.temperature
0.5
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import dist
from .backbones import backbone_from_config
from .config import Config, ConfigError, DataConfig, ViewSpec, dump_config, from_dict
from .data import eval_dataset, pretrain_dataset
from .data.sources import DataError
from .eval import extract_features, knn_classify
from .methods import Method, build_method
from .train.checkpoint import atomic_write, load_checkpoint
from .train.loop import FitResult, fit

#: sources named instead of a directory: ``digits:train``, ``cifar10:test:ROOT`` ...
BUILTIN_SOURCES = ("cifar10", "cifar100", "stl10", "digits")

#: keys that may differ between a run and its resumption (everything else must match).
RESUMABLE_CHANGES = (
    "train.epochs",
    "train.progress",
    "train.log_every",
    "train.ckpt_every",
    "train.device",
    "data.num_workers",
    "data.path",
    "knn.",
)


def build_from_config(cfg: Config) -> Method:
    """The method (with its backbone) that ``cfg`` describes, initialized from ``train.seed``."""
    torch.manual_seed(cfg.train.seed)
    backbone = backbone_from_config(cfg.backbone)
    return build_method(cfg.method.name, backbone, cfg.method)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): list(d) if isinstance(d, tuple | list) else d}


def _check_resume_config(saved: dict[str, Any], cfg: Config) -> None:
    a, b = _flat(saved), _flat(json.loads(json.dumps(cfg.to_dict())))
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES)]
    if diff:
        raise ConfigError(
            "cannot resume: the configuration differs from the checkpoint's in "
            + ", ".join(f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in diff[:5])
        )


def knn_monitor(cfg: Config, size: int):
    """A kNN evaluation closure for the training loop, or None when ``knn.every`` is 0."""
    if not (cfg.knn.every and cfg.knn.train and cfg.knn.test):
        return None
    mean, std = cfg.data.views[0].mean, cfg.data.views[0].std
    train_ds = labelled_eval_dataset(cfg.knn.train, size, cfg.knn.limit_train, mean, std)
    test_ds = labelled_eval_dataset(cfg.knn.test, size, cfg.knn.limit_test, mean, std)

    def monitor(encoder: nn.Module) -> dict[str, float]:
        res = knn_eval(
            encoder,
            train_ds,
            test_ds,
            k=cfg.knn.k,
            temperature=cfg.knn.temperature,
            batch_size=cfg.knn.batch_size,
            num_workers=cfg.data.num_workers,
        )
        return {"knn_top1": res["top1"], "knn_top5": res["top5"]}

    return monitor


def pretrain(cfg: Config, out_dir: str | Path, resume: bool = False, max_steps: int | None = None) -> FitResult:
    """Pretrain the method of ``cfg`` on ``cfg.data``; writes the run directory ``out_dir``."""
    out = Path(out_dir)
    ckpt = out / "checkpoints" / "last.pt"
    if resume and ckpt.exists():
        _check_resume_config(load_checkpoint(ckpt)["config"], cfg)
    elif not resume and ckpt.exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    dist.setup_device(cfg.train.device)
    dataset = pretrain_dataset(cfg.data)
    dataset.check_readable()
    method = build_from_config(cfg)
    record = json.loads(json.dumps(cfg.to_dict()))
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.yaml", lambda tmp: Path(tmp).write_text(dump_config(cfg)))
    return fit(
        method,
        dataset,
        cfg.optim,
        cfg.train,
        out,
        resume=resume,
        monitor=knn_monitor(cfg, cfg.data.views[0].size),
        monitor_every=cfg.knn.every,
        record=record,
        num_workers=cfg.data.num_workers,
        max_steps=max_steps,
    )


# ---------------------------------------------------------------------------------------------
# loading trained encoders


def _record_to_config(record: dict[str, Any], where: str) -> Config:
    try:
        return from_dict(Config, record)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_encoder(path: str | Path) -> tuple[nn.Module, Config]:
    """The evaluated encoder of a run directory, ``backbone.safetensors`` or checkpoint, and its config.

    A run directory gives its exported backbone when training finished, else its last checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "backbone.safetensors").is_file():
            p = p / "backbone.safetensors"
        elif (p / "checkpoints" / "last.pt").is_file():
            p = p / "checkpoints" / "last.pt"
        else:
            raise FileNotFoundError(f"{path}: no backbone.safetensors or checkpoints/last.pt in this directory")
    if not p.is_file():
        raise FileNotFoundError(f"weights not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(p), "pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(p))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{p}: not a readable safetensors file ({e})") from None
        cfg = _record_to_config(json.loads(meta.get("meta", "{}")), str(p))
        encoder = backbone_from_config(cfg.backbone)
        encoder.load_state_dict(tensors)
        return encoder, cfg
    state = load_checkpoint(p)
    cfg = _record_to_config(state.get("config", {}), str(p))
    method = build_from_config(cfg)
    method.load_state_dict(state["model"])
    return method.encoder, cfg


def labelled_eval_dataset(path: str, size: int, limit: int, mean, std):
    """Labelled images for evaluation at ``size`` (centre crops): an ImageFolder tree, or a built-in
    source as ``digits:train``, ``cifar10:test:ROOT`` ...; a fixed-seed subset of ``limit``."""
    spec = ViewSpec(size=size, mean=tuple(mean), std=tuple(std))
    if path.split(":")[0] in BUILTIN_SOURCES:
        kind, _, rest = path.partition(":")
        split, _, root = rest.partition(":")
        dc = DataConfig(source=kind, path=root, split=split or "train", limit=limit, views=[spec])
    else:
        dc = DataConfig(source="imagefolder", path=path, limit=limit, views=[spec])
    ds = eval_dataset(dc, size)
    if (ds.labels < 0).any():
        raise DataError(f"{path}: evaluation needs labels (an ImageFolder tree with one sub-folder per class)")
    ds.check_readable()
    return ds


def knn_eval(
    encoder: nn.Module,
    train_ds,
    test_ds,
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = False,
    distributed: bool = False,
) -> dict[str, float]:
    """Weighted kNN top-1/top-5 of ``encoder`` features: bank ``train_ds``, queries ``test_ds``.

    ``distributed``: under torchrun, each rank extracts a shard and all get every feature."""
    if device is not None:
        encoder.to(device)
    kw = dict(progress=progress, distributed=distributed)
    bank, bank_y = extract_features(encoder, train_ds, batch_size, device, num_workers, desc="bank features", **kw)
    q, q_y = extract_features(encoder, test_ds, batch_size, device, num_workers, desc="test features", **kw)
    n_cls = max(len(train_ds.source.classes), int(bank_y.max()) + 1, int(q_y.max()) + 1)
    return knn_classify(bank, bank_y, q, q_y, k=k, temperature=temperature, num_classes=n_cls)


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
    """``selfsup knn``: load weights, extract features of two labelled sets, classify (sharded over
    ranks under torchrun)."""
    dev = dist.setup_device(device)
    encoder, cfg = load_encoder(weights)
    size = size or cfg.data.views[0].size
    mean, std = cfg.data.views[0].mean, cfg.data.views[0].std
    train_ds = labelled_eval_dataset(train, size, limit_train, mean, std)
    test_ds = labelled_eval_dataset(test, size, limit_test, mean, std)
    k = cfg.knn.k if k is None else k
    t = cfg.knn.temperature if temperature is None else temperature
    res = knn_eval(encoder, train_ds, test_ds, k, t, batch_size, dev, num_workers, progress, distributed=True)
    return {**res, "k": k, "temperature": t, "n_train": len(train_ds), "n_test": len(test_ds), "image_size": size}


__all__ = ["pretrain", "load_encoder", "knn_eval", "knn_from_weights", "build_from_config", "labelled_eval_dataset"]
