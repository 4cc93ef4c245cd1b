"""Exported weights and embeddings: what leaves selfsup for other code.

``backbone.safetensors`` holds the evaluated encoder (the teacher for DINO, the online backbone for
BYOL, the query encoder for MoCo) under the plain torchvision/timm key names, so it loads into the
stock model with no key surgery (selfsup's ResNets return pooled features: set ``fc`` to identity):

>>> import tempfile, torch, torchvision
>>> from safetensors.torch import load_file
>>> import selfsup
>>> from selfsup.eval.export import export_encoder
>>> encoder = selfsup.build_backbone("resnet18").eval()
>>> path = tempfile.mkdtemp() + "/backbone.safetensors"
>>> export_encoder(encoder, path)
>>> model = torchvision.models.resnet18()
>>> model.fc = torch.nn.Identity()
>>> model.load_state_dict(load_file(path))
<All keys matched successfully>
>>> x = torch.randn(2, 3, 64, 64)
>>> torch.equal(model.eval()(x), encoder(x))
True

(A backbone trained with ``cifar_stem`` needs ``model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)``
and ``model.maxpool = nn.Identity()`` first, or ``selfsup.load_encoder(path)``, which reads the
configuration stored in the file.)

Embeddings (``selfsup embed``) are written as ``.npz`` (``features`` float32 ``(N, D)``, ``names``,
and ``labels`` where the images have classes) or ``.pt`` (the same keys in a dict).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..train.checkpoint import atomic_write, export_backbone

EMBEDDING_FORMATS = (".npz", ".pt")


def export_encoder(
    encoder: nn.Module, path: str | Path, record: dict[str, Any] | None = None, start: dict[str, Any] | None = None
) -> None:
    """Write ``encoder``'s weights as safetensors (atomically); ``record`` (the run's config) goes in
    the metadata so that :func:`selfsup.load_encoder` can rebuild the architecture, and ``start``
    (where the run's starting weights came from) with it."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: the exported file must end in .safetensors")
    export_backbone(encoder, path, record, start)


def save_embeddings(
    path: str | Path, features: torch.Tensor, names: list[str], labels: torch.Tensor | None = None
) -> None:
    """One row per image: ``features`` ``(N, D)``, ``names`` (N), ``labels`` (N) when given."""
    path = Path(path)
    if path.suffix not in EMBEDDING_FORMATS:
        raise ValueError(f"{path}: embeddings are written as .npz or .pt")
    if len(names) != len(features):
        raise ValueError(f"{len(names)} names for {len(features)} feature rows")
    data: dict[str, Any] = {"features": features.detach().float().cpu(), "names": list(names)}
    if labels is not None:
        data["labels"] = labels.detach().cpu().long()
    if path.suffix == ".pt":
        atomic_write(path, lambda tmp: torch.save(data, tmp))
        return
    arrays = {k: (v.numpy() if torch.is_tensor(v) else np.asarray(v, dtype=str)) for k, v in data.items()}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to the temporary name
            np.savez(f, **arrays)

    atomic_write(path, write)


def load_embeddings(path: str | Path) -> dict[str, Any]:
    """``{"features": Tensor (N, D), "names": list[str], ["labels": Tensor (N,)]}`` from either format."""
    path = Path(path)
    if path.suffix == ".pt":
        return torch.load(path, weights_only=True)
    with np.load(path) as z:
        out: dict[str, Any] = {"features": torch.from_numpy(z["features"]), "names": z["names"].tolist()}
        if "labels" in z:
            out["labels"] = torch.from_numpy(z["labels"])
    return out
