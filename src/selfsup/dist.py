"""torch.distributed helpers that are safe without an initialized process group.

Every function here is a no-op (or the identity) on one process, so methods and losses call them
unconditionally and the same code runs on a laptop and under ``torchrun``.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from .errors import ConfigError


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device | None = None) -> torch.device:
    """Initialize the process group from torchrun's environment when WORLD_SIZE > 1.

    Returns the device this process should use (``cuda:LOCAL_RANK`` with NCCL where CUDA exists,
    CPU with gloo otherwise).
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if launched_by_torchrun() and not is_dist():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return device


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when there is one, else CPU; otherwise the named device, which must exist."""
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
    return dev


def setup_device(name: str = "auto") -> torch.device:
    """The device of this process, with the process group initialized under torchrun: ``auto`` is
    ``cuda:LOCAL_RANK`` where CUDA exists, CPU otherwise; any other name is used as given."""
    return init_from_env(None if name == "auto" else resolve_device(name))


def barrier() -> None:
    if is_dist():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward gives each rank its slice of the gradient summed over ranks.

    With DDP averaging gradients over ranks, this makes a loss on gathered tensors produce exactly
    the gradient of the loss on the whole global batch held by one process.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ws = dist.get_world_size()
        out = [torch.empty_like(x) for _ in range(ws)]
        dist.all_gather(out, x.contiguous())
        ctx.batch = x.shape[0]
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        r = dist.get_rank()
        return grad[r * ctx.batch : (r + 1) * ctx.batch]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank) from all ranks along dim 0, with gradient."""
    if not is_dist() or world_size() == 1:
        return x
    if x.requires_grad:
        return _GatherWithGrad.apply(x)
    return gather_no_grad(x)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    if not is_dist() or world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks, differentiable (each rank's loss depends on every rank's ``x``)."""
    if not is_dist() or world_size() == 1:
        return x
    if x.requires_grad:
        return _AllReduceSum.apply(x)
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x
