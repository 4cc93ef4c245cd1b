"""Exports that load in one line elsewhere: a folder for timm or torchvision with the weights, a
``config.json`` (architecture, normalization, input size) and a model card ``README.md`` (method, data,
epochs and the run's evaluation figures), ready to upload to a model hub as it is.

- ``timm``: written by timm's own ``save_for_hf`` from a timm model holding the encoder's weights, so
  ``timm.create_model("local-dir:FOLDER", pretrained=True)`` (or, once uploaded, ``"hf-hub:USER/REPO"``)
  rebuilds it, and ``timm.create_model(ARCH, pretrained=True, num_classes=0,
  pretrained_cfg_overlay=dict(file=FOLDER/model.safetensors))`` loads the weights into the stock
  architecture. ResNets (standard stem and width)
  and the ViTs.
- ``torchvision``: ``model.safetensors`` under torchvision's key names and the architecture in
  ``config.json``; the card shows the lines that load it (a CIFAR-stem ResNet changes ``conv1`` and
  ``maxpool`` first).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from ..config import Config
from ..errors import ConfigError
from ..train.checkpoint import export_backbone
from ..train.logging import read_metrics
from .runs import load_encoder, start_record

FORMATS = ("safetensors", "timm", "torchvision")
TIMM_VITS = {
    "vit_small_patch16": "vit_small_patch16_224",
    "vit_base_patch16": "vit_base_patch16_224",
    "vit_small_patch8": "vit_small_patch8_224",
    "vit_small_patch14": "vit_small_patch14_dinov2",
    "vit_base_patch14": "vit_base_patch14_dinov2",
}
TORCHVISION_RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "wide_resnet101_2",
)


def paper(method: str) -> str:
    """The papers a method's module cites (their arXiv ids), from the module's docstring."""
    import re
    import sys

    from ..methods import METHODS

    doc = sys.modules[METHODS.get(method).__module__].__doc__ or ""
    found = dict.fromkeys(re.findall(r"arXiv:\s*(\d{4}\.\d{4,5})", doc.split("Official code")[0]))
    return ", ".join(f"arXiv:{a}" for a in found)


def timm_spec(cfg: Config) -> tuple[str, dict[str, Any]]:
    """The timm architecture and keyword arguments that build the encoder of ``cfg``."""
    b = cfg.backbone
    if b.name in TIMM_VITS:
        args: dict[str, Any] = {"img_size": b.img_size, "dynamic_img_size": True}
        if b.num_heads:
            args["num_heads"] = b.num_heads
        if b.depth:
            args["depth"] = b.depth
        if b.layer_scale or TIMM_VITS[b.name].endswith("dinov2"):  # the dinov2 architectures have LayerScale
            args["init_values"] = b.layer_scale  # 0.0 turns it off (timm drops None arguments)
        if b.reg_tokens:
            args.update(reg_tokens=b.reg_tokens, no_embed_class=True)
        return TIMM_VITS[b.name], args
    if b.name in TORCHVISION_RESNETS:
        if b.cifar_stem or b.width:
            what = "a CIFAR stem" if b.cifar_stem else f"width {b.width}"
            raise ConfigError(
                f"backbone {b.name} with {what} has no timm architecture; export --format torchvision "
                "(its model card shows the stem change) or load it with selfsup.load_encoder"
            )
        return b.name, {}
    raise ConfigError(f"backbone {b.name!r} has no timm architecture (timm exports: {', '.join(FORMATS)})")


def _data_config(cfg: Config) -> dict[str, Any]:
    size = cfg.data.views[0].size
    return {
        "input_size": (3, size, size),
        "interpolation": cfg.data.views[0].interpolation,
        "mean": tuple(cfg.data.mean),
        "std": tuple(cfg.data.std),
        "crop_pct": 0.875 if size >= 64 else 1.0,
    }


def _figures(weights: Path) -> dict[str, float]:
    """The run's last kNN-monitor figures and final loss, where ``weights`` is a run directory."""
    run = weights if weights.is_dir() else None
    if run is None or not (run / "metrics.jsonl").is_file():
        return {}
    out: dict[str, float] = {}
    for r in read_metrics(run):
        for k in ("loss", "knn_top1", "knn_top5", "epoch"):
            if isinstance(r.get(k), int | float) and "event" not in r:
                out[k] = float(r[k])
    return out


def model_card(cfg: Config, fmt: str, arch: str, load: str, figures: dict[str, float], start: dict | None) -> str:
    m, d, t = cfg.method.name, cfg.data, cfg.train
    lines = [
        "---",
        f"library_name: {'timm' if fmt == 'timm' else 'pytorch'}",
        "tags:",
        "- image-feature-extraction",
        "- self-supervised",
        "- selfsup",
        f"- {m}",
        "---",
        "",
        f"# {arch}, pretrained with {m} (selfsup)",
        "",
        f"A {cfg.backbone.name} backbone pretrained without labels by **{m}**"
        + (f" ({paper(m)})" if paper(m) else "")
        + " with selfsup. The weights are the evaluated encoder (the teacher for DINO, the online network "
        "for BYOL, the query encoder for MoCo); the network returns pooled features, with no classifier.",
        "",
        "| | |",
        "|---|---|",
        f"| data | `{d.path or d.source}` ({d.limit or 'all'} images) |",
        f"| epochs | {t.epochs} (batch {t.batch_size}) |",
        f"| optimizer | {cfg.optim.name}, lr {cfg.optim.lr} ({cfg.optim.lr_scaling} scaling), "
        f"weight decay {cfg.optim.weight_decay} |",
        f"| input | {d.views[0].size} px, mean {list(d.mean)}, std {list(d.std)}, {d.views[0].interpolation} |",
    ]
    if start:
        lines.append(f"| started from | {start.get('source')} (sha256 {str(start.get('sha256'))[:12]}) |")
    for key, label in (("knn_top1", "kNN top-1 (monitor, last)"), ("knn_top5", "kNN top-5 (monitor, last)")):
        if key in figures:
            lines.append(f"| {label} | {100 * figures[key]:.2f}% (k={cfg.knn.k}, T={cfg.knn.temperature}) |")
    if "loss" in figures:
        lines.append(f"| final training loss | {figures['loss']:.4f} |")
    lines += ["", "## Load", "", "```python", load, "```", "", "## Config", "", "```json"]
    lines += [json.dumps(cfg.to_dict(), indent=1), "```", ""]
    return "\n".join(lines)


def _timm_folder(encoder: nn.Module, cfg: Config, folder: Path) -> tuple[str, str]:
    import timm
    from timm.models import save_for_hf

    arch, args = timm_spec(cfg)
    model = timm.create_model(arch, pretrained=False, num_classes=0, **args)
    model.load_state_dict(encoder.state_dict(), strict=True)
    save_for_hf(model, str(folder), model_args=args, safe_serialization=True, data_config=_data_config(cfg))
    kw = "".join(f", {k}={v!r}" for k, v in args.items())
    dc = _data_config(cfg)
    overlay = f'file="{folder.name}/model.safetensors", mean={dc["mean"]}, std={dc["std"]}'
    load = (
        "import timm\n"
        f'model = timm.create_model("local-dir:{folder.name}", pretrained=True)  # or "hf-hub:USER/REPO"\n'
        "cfg = timm.data.resolve_data_config({}, model=model)  # this run's mean, std and input size\n"
        "transform = timm.data.create_transform(**cfg)\n"
        "# or the stock architecture with these weights:\n"
        f'stock = timm.create_model("{arch}", pretrained=True, num_classes=0{kw},\n'
        f"                          pretrained_cfg_overlay=dict({overlay}))"
    )
    return arch, load


def _torchvision_folder(encoder: nn.Module, cfg: Config, folder: Path, meta: dict) -> tuple[str, str]:
    b = cfg.backbone
    if b.name not in TORCHVISION_RESNETS or b.width:
        raise ConfigError(
            f"backbone {b.name!r}"
            + (f" at width {b.width}" if b.width else "")
            + " is not a torchvision model"
            + ("; export --format timm" if b.name in TIMM_VITS else "; load it with selfsup.load_encoder")
        )
    export_backbone(encoder, folder / "model.safetensors", meta["record"], meta["start"])
    dc = _data_config(cfg)
    config = {
        "library": "torchvision",
        "architecture": b.name,
        "cifar_stem": b.cifar_stem,
        "num_classes": 0,
        "num_features": int(encoder.num_features),
        **{k: list(v) if isinstance(v, tuple) else v for k, v in dc.items()},
        "method": cfg.method.name,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    stem = (
        "model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # the CIFAR stem\n"
        "model.maxpool = torch.nn.Identity()\n"
        if b.cifar_stem
        else ""
    )
    load = (
        "import torch, torchvision\n"
        "from safetensors.torch import load_file\n"
        f"model = torchvision.models.{b.name}()\n"
        f"{stem}"
        "model.fc = torch.nn.Identity()  # pooled features\n"
        f'model.load_state_dict(load_file("{folder.name}/model.safetensors"))\n'
        f"transform = torchvision.transforms.Normalize({list(cfg.data.mean)}, {list(cfg.data.std)})  # after ToTensor"
    )
    return b.name, load


def export_folder(weights: str | Path, out: str | Path, fmt: str) -> dict[str, Any]:
    """``selfsup export --format timm|torchvision``: the folder ``out`` (replaced atomically)."""
    if fmt not in ("timm", "torchvision"):
        raise ConfigError(f"--format {fmt!r}: a folder export is timm or torchvision")
    encoder, cfg = load_encoder(weights)
    encoder.eval()
    start = start_record(weights)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        folder = tmp / out.name
        folder.mkdir()
        if fmt == "timm":
            arch, load = _timm_folder(encoder, cfg, folder)
        else:
            arch, load = _torchvision_folder(encoder, cfg, folder, {"record": cfg.to_dict(), "start": start})
        figures = _figures(Path(weights))
        (folder / "README.md").write_text(model_card(cfg, fmt, arch, load, figures, start))
        if out.exists():
            shutil.rmtree(out)
        folder.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(encoder.state_dict())
    return {"out": str(out), "format": fmt, "backbone": cfg.backbone.name, "architecture": arch, "tensors": n}
