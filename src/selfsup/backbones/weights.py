"""Starting a backbone from existing weights: another library's state dict matched to selfsup's keys,
and the published weights of torchvision and timm.

selfsup's backbones carry the plain torchvision and timm key names, so a state dict saved by either
loads after its wrapper prefix is found and removed: ``module.`` (DDP), ``backbone.`` or
``encoder.`` (most self-supervised code), ``module.encoder_q.`` (MoCo), ``teacher.backbone.``
(a DINO-style checkpoint), ... The prefix is not guessed from a list: it is the one under which the
most of the backbone's keys are found. Keys of the source that the backbone has no place for (a
classifier ``fc.*`` or ``head.*``, a projection head) are reported and left out; a key the backbone
needs that the source lacks, or a shape that differs, is an error naming the first such key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

#: published weights: selfsup backbone name -> timm model name (``timm.create_model``)
TIMM_NAMES = {
    "vit_small_patch16": "vit_small_patch16_224",
    "vit_base_patch16": "vit_base_patch16_224",
    "vit_small_patch8": "vit_small_patch8_224",
}


class WeightsError(ValueError):
    """A state dict that does not fit the backbone; the message names the file and the first bad key."""


def find_prefix(source: Mapping[str, Any], target: Mapping[str, Any]) -> str:
    """The prefix ``p`` (``""`` or ending in ``.``) for which ``p + key`` is in ``source`` for the most
    keys of ``target`` (ties: the shortest)."""
    votes: Counter[str] = Counter()
    for key in source:
        for i in [0, *(j + 1 for j, c in enumerate(key) if c == ".")]:
            if key[i:] in target:
                votes[key[:i]] += 1
    if not votes:
        return ""
    best = max(votes.values())
    return min((p for p, v in votes.items() if v == best), key=len)


def match_state_dict(
    module: nn.Module, source: Mapping[str, torch.Tensor], where: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``source``'s tensors under ``module``'s key names, and what was matched.

    Returns ``(state, info)``: ``state`` loads into ``module`` with ``strict=True``; ``info`` holds the
    ``prefix`` removed, the number of ``loaded`` tensors and the source keys ``ignored`` (outside the
    prefix or without a place in ``module``). Raises :class:`WeightsError` naming ``where`` and the
    first key the backbone needs that is missing, or whose shape differs.
    """
    target = module.state_dict()
    source = {k: v for k, v in source.items() if isinstance(v, torch.Tensor)}
    prefix = find_prefix(source, target)
    state: dict[str, torch.Tensor] = {}
    for key, ref in target.items():
        if prefix + key not in source:
            if key.endswith("num_batches_tracked"):  # older torchvision files lack it
                state[key] = ref
                continue
            raise WeightsError(
                f"{where}: no tensor for the backbone's key {key!r}"
                + (f" (looked for {prefix + key!r}: the prefix holding most of its keys)" if prefix else "")
                + f"; {len(source)} tensors in the file, e.g. {', '.join(list(source)[:3])}"
            )
        value = source[prefix + key]
        if tuple(value.shape) != tuple(ref.shape):
            raise WeightsError(
                f"{where}: {prefix + key!r} has shape {tuple(value.shape)}, the backbone's {key!r} needs "
                f"{tuple(ref.shape)} (another architecture or stem? check backbone.name, backbone.cifar_stem, "
                "backbone.width, backbone.img_size)"
            )
        state[key] = value.to(ref.dtype)
    used = {prefix + k for k in state}
    ignored = sorted(k for k in source if k not in used)
    return state, {"prefix": prefix, "loaded": len(state), "ignored": ignored}


def load_matched(module: nn.Module, source: Mapping[str, torch.Tensor], where: str) -> dict[str, Any]:
    """Copy ``source`` into ``module`` (see :func:`match_state_dict`); returns what was matched."""
    state, info = match_state_dict(module, source, where)
    module.load_state_dict(state, strict=True)
    return info


def published_state_dict(name: str) -> tuple[dict[str, torch.Tensor], str]:
    """The published ImageNet weights for backbone ``name`` and where they came from: torchvision's
    ``DEFAULT`` weights for its ResNets, timm's default pretrained tag for the ViTs (downloaded once
    into their caches, ``TORCH_HOME`` and the Hugging Face cache)."""
    if name in TIMM_NAMES:
        import timm

        try:
            model = timm.create_model(TIMM_NAMES[name], pretrained=True, num_classes=0)
        except Exception as e:  # noqa: BLE001 - network and hub errors alike
            raise WeightsError(
                f"backbone.pretrained: timm could not load {TIMM_NAMES[name]!r} ({type(e).__name__}: {e}); "
                "without a network, pass a downloaded file as backbone.weights=PATH"
            ) from None
        return model.state_dict(), f"timm:{model.pretrained_cfg.get('hf_hub_id') or TIMM_NAMES[name]}"
    import torchvision.models as tvm

    try:
        weights = tvm.get_model_weights(name).DEFAULT
    except Exception:  # noqa: BLE001 - not a torchvision model
        raise WeightsError(
            f"backbone.pretrained: no published weights for backbone {name!r} "
            f"(torchvision's ResNets and {', '.join(TIMM_NAMES)} have them)"
        ) from None
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # noqa: BLE001 - network errors
        raise WeightsError(
            f"backbone.pretrained: torchvision could not load {weights.url} ({type(e).__name__}: {e}); "
            "without a network, pass a downloaded file as backbone.weights=PATH"
        ) from None
    return state, f"torchvision:{weights.url}"
