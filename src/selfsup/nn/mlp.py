"""The one MLP builder behind every projection head, predictor and prototype head.

Sizes and norms come from each method's config, so no head subclass exists just to change sizes.
"""

from __future__ import annotations

import copy
from typing import Literal

from torch import nn

Norm = Literal["bn", "bn_noshift", "bn_noaffine", "none"]


def _norm(kind: Norm, dim: int) -> nn.Module | None:
    if kind == "bn":
        return nn.BatchNorm1d(dim)
    if kind == "bn_noshift":  # a learned scale, no shift: TF's BatchNormalization(center=False)
        bn = nn.BatchNorm1d(dim)
        bn.bias.requires_grad_(False)  # stays at its initial 0
        return bn
    if kind == "bn_noaffine":
        return nn.BatchNorm1d(dim, affine=False)
    if kind == "none":
        return None
    raise ValueError(f"unknown norm {kind!r}; expected 'bn', 'bn_noshift', 'bn_noaffine' or 'none'")


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    norm: Norm = "bn",
    last_norm: Norm = "none",
    act: Literal["relu", "gelu"] = "relu",
    bias: bool | None = None,
    last_bias: bool | None = None,
) -> nn.Sequential:
    """``num_layers`` linear layers; hidden ones followed by ``norm`` and ``act``.

    ``bias`` defaults to False when a norm follows the layer (its shift makes a bias redundant), as
    in the official SimCLR, MoCo v3 and BYOL heads. ``last_norm`` normalizes the output (SimCLR v1/v2:
    a BN with scale and no shift; SimSiam's projector: a BN without affine parameters).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    activation = {"relu": nn.ReLU, "gelu": nn.GELU}[act]
    layers: list[nn.Module] = []
    dim = in_dim
    for i in range(num_layers):
        last = i == num_layers - 1
        out = out_dim if last else hidden_dim
        kind = last_norm if last else norm
        b = last_bias if last else bias
        if b is None:
            b = kind == "none"
        layers.append(nn.Linear(dim, out, bias=b))
        n = _norm(kind, out)
        if n is not None:
            layers.append(n)
        if not last:
            layers.append(activation(inplace=True) if act == "relu" else activation())
        dim = out
    return nn.Sequential(*layers)


def projection_head_layers(head: nn.Sequential, layers: int = 1) -> nn.Sequential:
    """A copy of the first ``layers`` layers (each a Linear with its norm and activation) of an MLP
    head built by :func:`selfsup.nn.mlp`: SimCLR v2 fine-tunes from ``layers=1`` of its 3-layer head.
    """
    out, seen = [], 0
    for m in head:
        if isinstance(m, nn.Linear):
            seen += 1
            if seen > layers:
                break
        out.append(m)
    if seen < layers or layers < 1:
        raise ValueError(f"the head has {seen} linear layers; cannot take the first {layers}")
    return copy.deepcopy(nn.Sequential(*out))
