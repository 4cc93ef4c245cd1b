"""Atomic checkpoints that load without executing code (``torch.load(weights_only=True)``), and the
exported backbone."""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..methods.base import Method
from .logging import MetricsLogger, git_sha


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad checkpoint file
        raise ValueError(f"{path}: not a readable selfsup checkpoint ({type(e).__name__}: {e})") from None


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    v, rest = state["python"][0], state["python"][1:]
    random.setstate((v, tuple(rest[0]), *rest[1:]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def export_backbone(
    encoder: nn.Module, path: Path, meta: dict[str, Any] | None = None, start: dict[str, Any] | None = None
) -> None:
    """Write the evaluated encoder as safetensors (keys as in the plain torchvision/timm model), with
    the run's config record (``meta``) and where its starting weights came from (``start``)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    metadata = {"format": "selfsup-backbone", "meta": json.dumps(meta or {})}
    if start is not None:
        metadata["start"] = json.dumps(start)
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def start_or_resume(
    method: Method,
    optimizer: torch.optim.Optimizer,
    logger: MetricsLogger,
    resume_from: Path | None,
    world: int,
    device: torch.device,
) -> int:
    """The step to start at: the checkpoint's when resuming from one, else 0 (a fresh metrics file)."""
    if resume_from is not None and resume_from.exists():
        state = load_checkpoint(resume_from, map_location=device)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        step = int(state["step"])
        logger.resume_from(step)
        logger.log({"event": "resume", "step": step})
        return step
    if logger.enabled:
        logger.resume_from(-1)
        info = {"world_size": world, "device": str(device), "torch": torch.__version__, "git": git_sha()}
        logger.log({"event": "start", "step": 0, **info})
    return 0
