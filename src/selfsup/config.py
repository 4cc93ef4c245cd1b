"""Typed configuration: dataclass defaults, YAML presets as small diffs, dotted overrides.

A preset is a YAML file in ``selfsup/configs`` (or any path) holding only what differs from the
defaults below; ``base: other-preset`` chains presets. Overrides are ``key.sub=value`` strings
parsed as YAML scalars (``train.epochs=10``, ``data.views.0.size=32``). Unknown keys and wrongly
typed values are errors that name the key and the file they came from.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .methods import METHODS, MethodConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class ViewSpec:
    """One kind of augmented view; ``count`` views of this kind are drawn per image.

    Defaults are SimCLR's ImageNet augmentation (arXiv:2002.05709, appendix A): random resized crop
    (scale 0.08-1), flip, colour jitter with strength 1.0 (0.8, 0.8, 0.8, 0.2) applied with p=0.8,
    grayscale p=0.2, Gaussian blur p=0.5 with sigma in [0.1, 2.0] and a kernel 10% of the image side.
    """

    count: int = 1
    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    #: the blur's kernel as a fraction of the side (SimCLR's and torchvision's truncated Gaussian);
    #: 0: untruncated (4 sigma either side), Pillow's ImageFilter.GaussianBlur, which the official
    #: MoCo v2/v3, SwAV, SimSiam, Barlow Twins, DINO and iBOT code and solo-learn use. It matters
    #: below about 170 px (multi-crop's 96-px views, CIFAR); the Pillow path always uses Pillow's blur
    blur_kernel_frac: float = 0.1
    solarize_p: float = 0.0
    #: resampling of the resized crop: bicubic (SimCLR, BYOL, Barlow Twins, DINO) or torchvision's
    #: default bilinear (MoCo v1/v2/v3, SwAV, SimSiam)
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"


@dataclass
class DataConfig:
    #: imagefolder | folder | shards | cifar10 | cifar100 | stl10 | digits; "auto" picks shards for a URL
    #: (contains "://") or a directory holding index.json (``selfsup shards``), imagefolder for a
    #: directory with class sub-folders, and folder otherwise.
    source: str = "auto"
    path: str = ""
    split: str = "train"
    download: bool = False
    limit: int = 0  # 0: all images; otherwise a fixed-seed random subset of this size
    limit_seed: int = 0
    num_workers: int = 4
    #: where views are augmented: "pil" per image in the DataLoader workers (Pillow, torchvision);
    #: "opencv" per image in the workers with OpenCV's kernels (the same parameters, about 3x less
    #: CPU work); "batched" in batches on the training device: images of one size in memory are
    #: cropped there too, images of several sizes are cropped per image in the workers against the
    #: whole image. "auto" (the default): "batched" when training on a GPU, "opencv" on the CPU, with
    #: a folder decoded once (``cache``) when it fits
    augment: Literal["auto", "pil", "opencv", "batched"] = "auto"
    #: opencv: decode a JPEG at 1/2, 1/4 or 1/8 scale when every view's crop is that many times its size
    reduce_decode: bool = True
    #: batched, images of several sizes (files, shards): "device" sends the workers' undecoded JPEGs to
    #: the training process, which decodes them in batches on the training device (nvJPEG on CUDA) and
    #: cuts the crops there; "workers" decodes and crops per image in the workers; "auto" (the
    #: default): "device" when training on CUDA, "workers" otherwise
    decode: Literal["auto", "workers", "device"] = "auto"
    #: decode every image once, whole, into a uint8 file shared by workers and ranks (memory-mapped);
    #: ``cache_size`` > 0 resizes each image's shorter side to it first (the aspect ratio is kept)
    cache: bool = False
    cache_size: int = 0
    #: raw images held in memory (``augment: batched``, a cache or CIFAR) are indexed batch by batch where
    #: they live, with no DataLoader: copied once to a CUDA device when they fit in half its free memory
    resident: bool = True
    #: the dataset's channel statistics: every view and every evaluation image is normalized with them
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    views: list[ViewSpec] = field(default_factory=lambda: [ViewSpec(count=2)])


@dataclass
class BackboneConfig:
    name: str = "resnet50"
    cifar_stem: bool = False
    zero_init_residual: bool = False
    width: int = 0  # ResNets: base width of the first stage (0: the architecture's own, 64)
    # Vision Transformers only (ResNets ignore these); see selfsup/backbones/vit.py
    img_size: int = 224  # the patch grid the position embedding is built for; other sizes resample it
    num_heads: int = 0  # 0: the architecture's own (6 for ViT-S; MoCo v3 uses 12)
    depth: int = 0  # transformer blocks; 0: the architecture's own (12 for ViT-Ti/S/B)
    drop_path_rate: float = 0.0
    pos_embed: Literal["learn", "sincos"] = "learn"  # sincos: fixed 2-D sin-cos (MoCo v3)
    freeze_patch_embed: bool = False  # keep the random patch projection (MoCo v3)
    weight_init: Literal["timm", "moco", "mae"] = "timm"  # moco: MoCo v3; mae: MAE (see backbones/vit.py)
    layer_scale: float = 0.0  # LayerScale's initial gain (DINOv2: 1e-5); 0: no LayerScale
    reg_tokens: int = 0  # register tokens after the CLS token (DINOv2 with registers: 4)
    drop_path_uniform: bool = False  # the same stochastic-depth rate in every block (DINOv2), not rising
    #: start from existing weights instead of a random init (continued pretraining): a safetensors
    #: file, a selfsup run directory, export or checkpoint, or a torchvision/timm state dict (.pt/.pth);
    #: wrapper prefixes (``module.``, ``backbone.``, ``encoder.``, ...) are found and removed
    weights: str = ""
    #: start from torchvision's (ResNets) or timm's (ViTs) published ImageNet weights (downloads once)
    pretrained: bool = False


@dataclass
class OptimConfig:
    name: Literal["lars", "sgd", "adamw"] = "lars"
    lr: float = 0.3  # base learning rate, scaled by lr_scaling
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"  # lr*bs/256 | lr*sqrt(bs) | lr
    weight_decay: float = 1e-6
    weight_decay_end: float | None = None  # cosine weight-decay schedule to this value (DINO)
    momentum: float = 0.9
    nesterov: bool = False  # SGD only
    betas: tuple[float, float] = (0.9, 0.999)
    trust_coefficient: float = 0.001  # LARS eta
    lars_clip: bool = False  # cap LARS's rate at the scheduled one (apex LARC clip, solo-learn clip_lr)
    warmup_epochs: float = 10.0
    warmup_start_lr: float = 0.0  # learning rate at step 0 of the warm-up (SwAV's 800-epoch run: 0.3)
    min_lr: float = 0.0  # final learning rate of the cosine schedule
    #: after the warm-up: cosine to ``min_lr``, or steps (x ``lr_gamma`` at each of ``lr_milestones``,
    #: in epochs: MoCo v1's /10 at 120 and 160)
    schedule: Literal["cosine", "step"] = "cosine"
    lr_milestones: list[float] = field(default_factory=list)
    lr_gamma: float = 0.1
    clip_grad: float = 0.0  # max gradient norm; 0 disables
    #: global: the norm over all parameters (torch's clip_grad_norm_); per_param: each parameter's
    #: gradient on its own (DINO's ``clip_gradients``); per_module: each top-level module's (backbone,
    #: heads) apart (DINOv2)
    clip_mode: Literal["global", "per_param", "per_module"] = "global"


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 4096  # global: split over ranks
    accum_steps: int = 1
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    #: auto: bf16 autocast on CUDA, fp32 elsewhere (bf16 on a CPU with native bf16 is an opt-in:
    #: faster, see selfsup/precision.py); losses always run in fp32
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    channels_last: bool = True  # NHWC convolutions: faster on CUDA and with oneDNN on CPU
    compile: bool = False
    log_every: int = 10  # steps between metric read-backs (the only host syncs of the loop)
    ckpt_every: int = 0  # steps between mid-epoch checkpoints; 0: only at epoch ends
    progress: bool = True
    collapse_threshold: float = 0.1  # warn when z_std stays below this (0 disables)
    collapse_window: int = 20  # ... for this many consecutive metric records
    #: where metrics go (rank 0): metrics.jsonl (always: resume and report read it), TensorBoard, and
    #: the trackers wandb and mlflow (pip install "selfsup[wandb]" or "selfsup[mlflow]"), configured
    #: by their own environment variables (WANDB_MODE, WANDB_DIR, WANDB_PROJECT, MLFLOW_TRACKING_URI)
    loggers: list[Literal["jsonl", "tensorboard", "wandb", "mlflow"]] = field(
        default_factory=lambda: ["jsonl", "tensorboard"]
    )


@dataclass
class KnnConfig:
    """Weighted kNN (Wu et al. 2018): the periodic monitor during pretraining and the defaults of
    ``selfsup knn``. k=200, T=0.1 as in the field's CIFAR benchmarks; DINO uses k=20, T=0.07."""

    k: int = 200  # neighbours that vote
    temperature: float = 0.1  # vote weight exp(similarity / T)
    every: int = 0  # epochs between monitor evaluations; 0: off
    train: str = ""  # labelled bank (ImageFolder) for the monitor
    test: str = ""  # labelled queries for the monitor
    limit_train: int = 0  # fixed-seed subset of the bank (0: all)
    limit_test: int = 0  # fixed-seed subset of the queries (0: all)
    batch_size: int = 256  # images per forward pass


@dataclass
class Config:
    method: MethodConfig = field(default_factory=lambda: METHODS.get("simclr").Config())
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples as lists): what config records in files hold."""
        return dataclasses.asdict(self, dict_factory=lambda items: {k: _plain(v) for k, v in items})


def _plain(x: Any) -> Any:
    return [_plain(v) for v in x] if isinstance(x, list | tuple) else x


# ---------------------------------------------------------------------------------------------
# presets


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """A config record as dotted keys (``train.epochs``, ``data.views.0.size``: lists of sections by index)."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(d, list) and d and all(isinstance(v, dict) for v in d):
        out = {}
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): d}


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _preset_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"preset file not found: {p}")
        return p
    p = PRESET_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        raise ConfigError(f"unknown preset {name_or_path!r}; known: {', '.join(list_presets())}")
    return p


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _preset_chain(name_or_path: str, seen: tuple[str, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    path = _preset_path(name_or_path)
    if str(path) in seen:
        raise ConfigError(f"{path}: 'base' chain loops")
    data = _read_yaml(path)
    base = data.pop("base", None)
    chain = _preset_chain(str(base), seen + (str(path),)) if base else []
    return chain + [(path, data)]


def _merge(dst: dict[str, Any], src: dict[str, Any], where: str, prefix: str = "") -> None:
    for k, v in src.items():
        key = f"{prefix}{k}"
        if k not in dst:
            raise ConfigError(f"{where}: unknown key {key!r}")
        if isinstance(v, dict) and isinstance(dst[k], dict):
            _merge(dst[k], v, where, key + ".")
        else:
            dst[k] = v


def _defaults_for(method_name: str) -> dict[str, Any]:
    try:
        mcfg = METHODS.get(method_name).Config()
    except KeyError as e:
        raise ConfigError(f"method.name: {e.args[0]}") from None
    return Config(method=mcfg).to_dict()


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, value = item.split("=", 1)
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def _set_path(d: Any, path: list[str], value: Any, full: str) -> None:
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(d, list):
            if not part.isdigit() or int(part) >= len(d):
                raise ConfigError(f"unknown key {full!r}: index {part!r} out of range (list of {len(d)})")
            if last:
                d[int(part)] = value
            else:
                d = d[int(part)]
        elif isinstance(d, dict):
            if part not in d:
                hint = f": normalization is the dataset's: set data.{part}" if path[:2] == ["data", "views"] else ""
                raise ConfigError(f"unknown key {full!r}{hint if part in ('mean', 'std') else ''}")
            if last:
                d[part] = value
            else:
                d = d[part]
        else:
            raise ConfigError(f"unknown key {full!r}: {'.'.join(path[:i])} is not a section")


def load_config(preset: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the preset chain (``base`` first), then ``overrides``; typed and checked."""
    chain = _preset_chain(preset) if preset else []
    parsed = [parse_override(o) for o in overrides or []]
    method_name = "simclr"
    for _, data in chain:
        m = data.get("method")
        if isinstance(m, dict) and "name" in m:
            method_name = m["name"]
    for path, value in parsed:
        if path == ["method", "name"]:
            method_name = value
    raw = _defaults_for(str(method_name))
    for src, data in chain:
        _merge(raw, data, str(src))
    if chain:  # complete list items a preset gave in part (a view spec's unnamed keys)
        try:
            raw = from_dict(Config, raw, "").to_dict()
        except ConfigError as e:
            raise ConfigError(f"{' <- '.join(str(p) for p, _ in reversed(chain))}: {e}") from None
    for (path, value), text in zip(parsed, overrides or []):
        _set_path(raw, path, value, text.split("=", 1)[0])
    return from_dict(Config, raw, "")


# ---------------------------------------------------------------------------------------------
# typed construction


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and value types recursively."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    if cls is MethodConfig:
        name = data.get("name", "")
        try:
            cls = METHODS.get(name).Config
        except KeyError as e:
            raise ConfigError(f"{prefix}name: {e.args[0]}") from None
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if cls is ViewSpec and unknown and unknown[0] in ("mean", "std"):
        raise ConfigError(f"{prefix + unknown[0]}: normalization is the dataset's: set data.{unknown[0]}")
    if unknown:
        raise ConfigError(f"unknown key {prefix + unknown[0]!r}; valid keys: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key + ".")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}.{i}") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}.{i}") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
