"""Loading what runs leave on disk, and the datasets evaluation reads at a run's image size.

A run directory holds ``config.yaml``, ``checkpoints/last.pt`` and, when training finished,
``backbone.safetensors``; each file stores the run's config record, from which the architecture
is rebuilt. Classifier files (``selfsup finetune/distill --out``) hold a fine-tuned network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backbones import backbone_from_config
from ..backbones.weights import WeightsError, load_matched, published_state_dict
from ..config import IMAGENET_MEAN, IMAGENET_STD, Config, DataConfig, ViewSpec, from_dict
from ..data import ViewDataset, eval_dataset
from ..errors import ConfigError, DataError
from ..eval.supervised import Classifier, train_transform
from ..methods import Method, build_method
from ..train.checkpoint import load_checkpoint, save_checkpoint

#: sources named instead of a directory: ``digits:train``, ``cifar10:test:ROOT`` ...
BUILTIN_SOURCES = ("cifar10", "cifar100", "stl10", "digits")

CLASSIFIER_FORMAT = "selfsup-classifier"


def build_from_config(cfg: Config) -> Method:
    """The method (with its backbone) that ``cfg`` describes, initialized from ``train.seed``."""
    torch.manual_seed(cfg.train.seed)
    backbone = backbone_from_config(cfg.backbone)
    return build_method(cfg.method.name, backbone, cfg.method)


def build_for_training(cfg: Config) -> tuple[Method, dict[str, Any] | None]:
    """As :func:`build_from_config`, the backbone started from ``backbone.weights`` or
    ``backbone.pretrained`` before the method copies it into its targets (EMA teacher, key encoder).

    Returns the method and where its start came from (None for a random init): ``source``, the
    file's ``sha256``, the ``prefix`` removed from its keys, the number of tensors ``loaded`` and of
    source tensors ``ignored``. The same random heads are drawn as by :func:`build_from_config`."""
    b = cfg.backbone
    if b.weights and b.pretrained:
        raise ConfigError("backbone.weights and backbone.pretrained=true both name a start: keep one")
    torch.manual_seed(cfg.train.seed)
    backbone = backbone_from_config(b)
    start = None
    if b.weights:
        state, source, digest = read_weights(b.weights)
        info = load_matched(backbone, state, f"backbone.weights={b.weights}")
        start = {"source": source, "sha256": digest, **info}
    elif b.pretrained:
        state, source = published_state_dict(b.name)
        info = load_matched(backbone, state, f"backbone.pretrained ({source})")
        start = {"source": source, "sha256": "", **info}
    if start is not None:
        start["ignored"] = len(start["ignored"])
    return build_method(cfg.method.name, backbone, cfg.method), start


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str, str]:
    """The tensors of a starting-weights file, a description of it, and the file's sha256.

    A selfsup run directory, export or checkpoint gives its evaluated encoder (the teacher for DINO);
    any other safetensors file or torch state dict (.pt, .pth, .bin, ...) its tensors, unwrapped from
    a ``state_dict``, ``model``, ``teacher`` or ``module`` entry where it has one."""
    import hashlib

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"backbone.weights: {p} not found")
    if p.is_dir():
        encoder, _ = load_encoder(p)
        f = _weights_file(p)
        return encoder.state_dict(), f"selfsup run {p}", hashlib.sha256(f.read_bytes()).hexdigest()
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    if p.suffix == ".safetensors":
        tensors, meta = read_safetensors(p, "backbone.weights: ")
        kind = "selfsup export" if meta.get("format") == "selfsup-backbone" else "safetensors file"
        return tensors, f"{kind} {p}", digest
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file
        raise WeightsError(f"backbone.weights: {p} is not a readable state dict ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and obj.get("format") == 1 and "model" in obj and "config" in obj:
        method, _ = load_method(p)
        return method.encoder.state_dict(), f"selfsup checkpoint {p}", digest
    for key in ("state_dict", "model", "teacher", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"backbone.weights: {p} holds no state dict of tensors")
    return obj, f"state dict {p}", digest


def config_from_record(record: dict[str, Any], where: str | Path) -> Config:
    """The config stored in a file; an invalid record is an error naming the file.

    Records written before normalization moved from the views to the dataset (``data.views.N.mean``
    and ``.std``, equal in every view) read as ``data.mean`` and ``data.std``."""
    data = record.get("data")
    if isinstance(data, dict) and isinstance(data.get("views"), list):
        views = [dict(v) if isinstance(v, dict) else v for v in data["views"]]
        for key in ("mean", "std"):
            found = [v.pop(key) for v in views if isinstance(v, dict) and key in v]
            if found:
                if any(list(f) != list(found[0]) for f in found):
                    raise ConfigError(f"{where}: data.views hold different {key} values; one data.{key} is needed")
                data = {**data, key: data.get(key, found[0])}
        record = {**record, "data": {**data, "views": views}}
    try:
        return from_dict(Config, record)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


# ---------------------------------------------------------------------------------------------
# encoders and methods


def _weights_file(path: str | Path) -> Path:
    """A run directory's ``backbone.safetensors`` when training finished, else its last checkpoint."""
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
    return p


def load_method(path: str | Path) -> tuple[Method, Config]:
    """The whole method (encoder, projection head, ...) of a run directory or checkpoint."""
    p = Path(path)
    p = p / "checkpoints" / "last.pt" if p.is_dir() else p
    if p.suffix == ".safetensors":
        raise ValueError(f"{path}: an exported backbone holds no projection head; pass the run or its checkpoint")
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    state = load_checkpoint(p)
    cfg = config_from_record(state.get("config", {}), p)
    method = build_from_config(cfg)
    method.load_state_dict(state["model"])
    return method, cfg


def read_safetensors(p: Path, what: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file; an unreadable file is a ValueError naming it
    (after ``what``, the option it came from)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(p), "pt") as f:
            meta = f.metadata() or {}
        return load_file(str(p)), meta
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{what}{p} is not a readable safetensors file ({e})") from None


def load_encoder(path: str | Path) -> tuple[nn.Module, Config]:
    """The evaluated encoder of a run directory, ``backbone.safetensors`` or checkpoint, and its config."""
    p = _weights_file(path)
    if p.suffix != ".safetensors":
        method, cfg = load_method(p)
        return method.encoder, cfg
    tensors, meta = read_safetensors(p)
    cfg = config_from_record(json.loads(meta.get("meta", "{}")), p)
    encoder = backbone_from_config(cfg.backbone)
    encoder.load_state_dict(tensors)
    return encoder, cfg


def start_record(path: str | Path) -> dict[str, Any] | None:
    """Where the backbone of a run directory, export or checkpoint started from (None: random init)."""
    p = _weights_file(path)
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(p), "pt") as f:
            start = (f.metadata() or {}).get("start")
        return json.loads(start) if start else None
    return load_checkpoint(p).get("start")


def head_layers(method: Method, layers: int) -> nn.Sequential:
    """The first ``layers`` of the method's MLP projection head (SimCLR v2 fine-tunes from one)."""
    return method.head_layers(layers)


def encoder_and_head(weights: str | Path, layers: int = 0) -> tuple[nn.Module, nn.Module | None, Config]:
    """The evaluated encoder, the first ``layers`` of the projection head (needs a checkpoint) or
    None, and the run's config."""
    if layers <= 0:
        encoder, cfg = load_encoder(weights)
        return encoder, None, cfg
    method, cfg = load_method(weights)
    return method.encoder, head_layers(method, layers), cfg


# ---------------------------------------------------------------------------------------------
# classifier files


def save_classifier(path: str | Path, model: Classifier, cfg: Config, classes: list[str], layers: int) -> None:
    """A fine-tuned or distilled classifier, loadable with :func:`load_classifier` (``weights_only``)."""
    state = {
        "format": CLASSIFIER_FORMAT,
        "config": cfg.to_dict(),
        "classes": list(classes),
        "num_classes": model.num_classes,
        "head_layers": layers,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    save_checkpoint(Path(path), state)


def load_classifier(path: str | Path) -> tuple[Classifier, Config, list[str]]:
    """``(classifier, config, class names)`` from a file written by ``selfsup finetune/distill --out``."""
    state = load_checkpoint(Path(path))
    if state.get("format") != CLASSIFIER_FORMAT:
        raise ValueError(f"{path}: not a classifier written by `selfsup finetune --out` or `selfsup distill --out`")
    cfg = config_from_record(state["config"], path)
    layers = int(state["head_layers"])
    if layers > 0:
        method = build_from_config(cfg)
        encoder, extra = method.encoder, head_layers(method, layers)
    else:
        encoder, extra = backbone_from_config(cfg.backbone), None
    model = Classifier(encoder, int(state["num_classes"]), extra)
    model.load_state_dict(state["model"])
    return model.eval(), cfg, list(state["classes"])


# ---------------------------------------------------------------------------------------------
# evaluation datasets


def image_dataset(
    path: str,
    size: int,
    limit: int = 0,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    *,
    labelled: bool = True,
    augment: bool = False,
) -> ViewDataset:
    """Images for evaluation at ``size``: an ImageFolder tree, or a built-in source as ``digits:train``,
    ``cifar10:test:ROOT`` ...; a fixed-seed subset of ``limit``. Centre crops, or random resized
    crops and flips with ``augment``. ``labelled=False`` accepts a plain folder of images too."""
    dc = DataConfig(source="imagefolder" if labelled else "auto", path=path, limit=limit, views=[ViewSpec(size=size)])
    dc.mean, dc.std = tuple(mean), tuple(std)  # type: ignore[assignment]
    kind, _, rest = path.partition(":")
    if kind in BUILTIN_SOURCES:
        split, _, root = rest.partition(":")
        dc.source, dc.path, dc.split = kind, root, split or "train"
    ds = eval_dataset(dc, size)
    if labelled and (ds.labels < 0).any():
        raise DataError(f"{path}: evaluation needs labels (an ImageFolder tree with one sub-folder per class)")
    ds.check_readable()
    return ViewDataset(ds.source, [train_transform(size, dc.mean, dc.std)], ds.indices) if augment else ds


def run_dataset(
    path: str, cfg: Config, limit: int = 0, size: int | None = None, *, labelled: bool = True, augment: bool = False
) -> ViewDataset:
    """:func:`image_dataset` at the run's image size (or ``size``) and normalization."""
    d = cfg.data
    return image_dataset(path, size or d.views[0].size, limit, d.mean, d.std, labelled=labelled, augment=augment)
