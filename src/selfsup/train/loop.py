"""The one training loop. It knows no method: it calls ``method(views)`` and the method's hooks.

Per step: ``on_step`` -> forward under bf16 autocast (CUDA; opt-in on CPU) -> backward (accumulated over micro
batches, DDP-synchronized on the last) -> scheduled lr / weight decay -> clip -> optimizer step ->
EMA of the method's declared (online, target) pairs. Metrics stay on the device and are read back
every ``log_every`` steps, which is also when a non-finite loss is detected; checkpoints are only
written after such a check, so a run that diverges never overwrites its last good checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import dist
from ..config import ConfigError, OptimConfig, TrainConfig
from ..data.dataset import EpochSampler, ViewDataset, collate, sample_seed, warn_skipped
from ..methods.base import Method, Progress
from ..nn.ema import ema_update
from ..nn.syncbn import convert_sync_batchnorm
from ..precision import use_bf16 as use_bf16_on
from .checkpoint import atomic_write, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .logging import MetricsLogger
from .optim import build_optimizer, build_schedule, clip_grad, scaled_lr

Monitor = Callable[[nn.Module], dict[str, float]]


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class FitResult:
    steps: int
    epochs: float
    loss: float
    images_per_s: float
    skipped_images: int
    out_dir: Path | None
    last: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
    return dev


def export_backbone(encoder: nn.Module, path: Path, meta: dict[str, Any] | None = None) -> None:
    """Write the evaluated encoder as safetensors (keys as in the plain torchvision/timm model)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    metadata = {"format": "selfsup-backbone", "meta": json.dumps(meta or {})}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


class _StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint at the end of the current step and stop."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def fit(
    method: Method,
    dataset: ViewDataset,
    optim: OptimConfig,
    train: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    monitor: Monitor | None = None,
    monitor_every: int = 0,
    record: dict[str, Any] | None = None,
    num_workers: int = 0,
    augment: Callable[[torch.Tensor, int], list[torch.Tensor]] | None = None,
    max_steps: int | None = None,
) -> FitResult:
    """Train ``method`` on ``dataset``; checkpoints, metrics and the exported backbone go to ``out_dir``.

    ``record`` (the resolved config) is stored in checkpoints and export metadata. ``augment`` turns
    a batch of raw uint8 images into the views on the training device (``data.augment: batched``);
    without it the dataset yields the views. ``max_steps`` stops early after a checkpoint, as a
    preempted job would.
    """
    augment = augment if augment is not None else dataset.batch_augment
    if dataset.raw and augment is None:
        raise ConfigError("the dataset yields raw images (data.augment=batched): pass augment=BatchedViews(views)")
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "checkpoints" / "last.pt" if out is not None else None
    device = dist.init_from_env(None if train.device == "auto" else resolve_device(train.device))
    world, rank = dist.world_size(), dist.rank()
    if train.batch_size % world:
        raise ConfigError(f"train.batch_size={train.batch_size} is not divisible by the {world} processes")
    per_rank = train.batch_size // world
    if per_rank % train.accum_steps:
        raise ConfigError(f"train.accum_steps={train.accum_steps} does not divide the per-process batch {per_rank}")
    micro = per_rank // train.accum_steps
    if train.accum_steps > 1:
        warnings.warn(
            f"train.accum_steps={train.accum_steps}: gradients are accumulated, but batch statistics (BatchNorm, "
            f"negatives, cross-correlations) cover micro-batches of {micro} images, not the whole batch",
            stacklevel=2,
        )
    cuda = device.type == "cuda"
    use_bf16 = use_bf16_on(device, train.precision)
    channels_last = train.channels_last

    method.to(device)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    model: nn.Module = method
    if world > 1:
        if method.sync_bn:
            method = convert_sync_batchnorm(method, device)
        model = torch.nn.parallel.DistributedDataParallel(method, device_ids=[device.index] if cuda else None)
    if train.compile:
        model = torch.compile(model)

    peak_lr = scaled_lr(optim, train.batch_size)
    optimizer = build_optimizer(method.param_groups(), optim, peak_lr, device)
    sampler = EpochSampler(len(dataset), train.batch_size, seed=train.seed, rank=rank, world=world)
    spe = sampler.steps_per_epoch
    if spe == 0:
        raise ConfigError(f"train.batch_size={train.batch_size} is larger than the dataset ({len(dataset)} images)")
    total = spe * train.epochs
    schedule = build_schedule(optim, peak_lr, total, spe)
    loader = DataLoader(
        dataset,
        batch_size=micro,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=cuda,
        drop_last=False,
        persistent_workers=False,
        # its own generator: starting an epoch must not draw from the global RNG that methods use
        generator=torch.Generator().manual_seed(train.seed),
    )

    logger = MetricsLogger(out, enabled=dist.is_main())
    step = 0
    if resume and ckpt_path is not None and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=device)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        step = int(state["step"])
        logger.resume_from(step)
        logger.log({"event": "resume", "step": step})
    elif dist.is_main() and out is not None:
        logger.resume_from(-1)  # a fresh run starts a fresh metrics file
        logger.log(
            {
                "event": "start",
                "step": 0,
                "world_size": world,
                "device": str(device),
                "torch": torch.__version__,
                "git": _git_sha(),
            }
        )

    def checkpoint() -> None:
        if ckpt_path is not None and dist.is_main():
            save_checkpoint(
                ckpt_path,
                {
                    "format": 1,
                    "model": method.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "rng": rng_state(),
                    "config": record or {},
                    "world_size": world,
                },
            )
        dist.barrier()

    loss_sum = torch.zeros((), device=device)
    log_sums: dict[str, torch.Tensor] = {}
    bad = torch.zeros((), dtype=torch.bool, device=device)
    count, images, skipped_seen = 0, 0, set()
    t_log = time.perf_counter()
    t_start, step_start = t_log, step
    last: dict[str, Any] = {}
    bar = tqdm(
        total=total,
        initial=step,
        disable=not (train.progress and dist.is_main()),
        unit="step",
        dynamic_ncols=True,
        desc="pretrain",
    )

    stop = _StopFlag()
    stopping = False

    def flush() -> dict[str, Any]:
        """Read metrics back (the loop's host sync), stop on a non-finite loss, and agree across
        ranks on a stop signal (so that every rank checkpoints and stops after the same step)."""
        nonlocal loss_sum, log_sums, count, images, t_log, stopping
        if count == 0:
            return {}
        signalled = torch.tensor(float(stop.signal is not None) * count, device=device)
        vals = torch.stack([loss_sum, *log_sums.values(), bad.float() * count, signalled]) / count
        if world > 1:
            vals = dist.all_reduce_sum(vals) / world
        vals = vals.tolist()
        stopping = stopping or vals.pop() > 0
        if vals[-1] > 0 or not math.isfinite(vals[0]):
            raise NonFiniteLossError(
                f"non-finite loss at or before step {step}; stopped without writing a checkpoint"
                + (f" (last good one: {ckpt_path})" if ckpt_path is not None and ckpt_path.exists() else "")
                + ". Lower optim.lr or check the data."
            )
        now = time.perf_counter()
        rec = {
            "step": step,
            "epoch": round(step / spe, 4),
            "loss": vals[0],
            **dict(zip(log_sums, vals[1:-1])),
            "lr": optimizer.param_groups[0]["lr"],
            "weight_decay": float(schedule.weight_decay[step - 1]),
            "images_per_s": images / max(now - t_log, 1e-9),
        }
        logger.log(rec)
        collapse.update(rec.get("z_std"), step)
        bar.set_postfix(loss=f"{vals[0]:.4f}")
        loss_sum = torch.zeros((), device=device)
        log_sums = {}
        count, images, t_log = 0, 0, now
        return rec

    collapse = CollapseWatch(train.collapse_threshold, train.collapse_window)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    stop_at = total if max_steps is None else min(total, max_steps)
    with stop:
        while step < stop_at:
            epoch = step // spe
            sampler.set_position(epoch, step % spe)
            model.train()
            for i, batch in enumerate(loader):
                first, last_micro = i % train.accum_steps == 0, i % train.accum_steps == train.accum_steps - 1
                if batch["skipped"]:
                    warn_skipped(batch["skipped"], skipped_seen)
                if first:
                    method.on_step(Progress(step, total, spe))
                views = [v.to(device, non_blocking=True) for v in batch["views"]]
                if augment is not None:  # seeded by position, so a resumed run draws the same views
                    micro_index = (step % spe) * train.accum_steps + i % train.accum_steps
                    views = augment(views[0], sample_seed(train.seed, epoch, micro_index * world + rank))
                if channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                sync = contextlib.nullcontext() if last_micro or world == 1 else model.no_sync()
                with sync:
                    with autocast:
                        output = model(views)
                    (output.loss / train.accum_steps).backward()
                loss = output.loss.detach()
                loss_sum += loss.float() / train.accum_steps
                bad |= ~torch.isfinite(loss)
                for k, v in output.logs.items():
                    log_sums[k] = log_sums.get(k, 0) + v.detach().float() / train.accum_steps
                images += views[0].shape[0] * world
                if not last_micro:
                    continue
                schedule.apply(optimizer, step)
                clip_grad(method, optim.clip_grad, optim.clip_mode)
                method.after_backward(Progress(step, total, spe))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                progress = Progress(step, total, spe)
                for online, target in method.ema_pairs():
                    ema_update(online, target, method.ema_momentum(progress), method.ema_buffers)
                step += 1
                count += 1
                bar.update(1)
                end_of_epoch = step % spe == 0
                if (
                    step % train.log_every == 0
                    or end_of_epoch
                    or step == stop_at
                    or (world == 1 and stop.signal is not None)
                ):
                    last = flush() or last
                if stopping or step == stop_at or end_of_epoch or (train.ckpt_every and step % train.ckpt_every == 0):
                    last = flush() or last
                    checkpoint()
                if stopping:
                    bar.close()
                    raise KeyboardInterrupt(f"stopped by signal {stop.signal} at step {step}; resume with --resume")
                if step == stop_at:
                    break
            if step % spe == 0 and monitor is not None and monitor_every and (step // spe) % monitor_every == 0:
                if dist.is_main():
                    res = monitor(method.encoder)
                    logger.log({"step": step, "epoch": step / spe, **res})
                    last.update(res)
                    method.train()
                dist.barrier()
    bar.close()
    elapsed = time.perf_counter() - t_start
    if out is not None and dist.is_main() and step == total:
        export_backbone(method.encoder, out / "backbone.safetensors", record)
    if skipped_seen:
        warnings.warn(f"{len(skipped_seen)} unreadable image(s) were skipped during training", stacklevel=2)
    logger.close()
    return FitResult(
        step,
        step / spe,
        float(last.get("loss", float("nan"))),
        (step - step_start) * train.batch_size / max(elapsed, 1e-9),
        len(skipped_seen),
        out,
        last,
    )


class CollapseWatch:
    """Warns once when the collapse signal ``z_std`` (about 1 when healthy, 0 when every image
    maps to one point) stays below ``threshold`` for ``window`` consecutive metric records."""

    def __init__(self, threshold: float, window: int) -> None:
        self.threshold, self.window, self.low, self.warned = threshold, window, 0, False

    def update(self, z_std: float | None, step: int) -> bool:
        if z_std is None or self.threshold <= 0:
            return False
        self.low = self.low + 1 if z_std < self.threshold else 0
        if self.low >= self.window and not self.warned:
            self.warned = True
            warnings.warn(
                f"representation collapse suspected at step {step}: z_std (std of l2-normalized embeddings "
                f"x sqrt(d)) has stayed below {self.threshold} for {self.window} metric records "
                f"(now {z_std:.4f}; about 1 when healthy). Check the learning rate, predictor and augmentations.",
                stacklevel=2,
            )
            return True
        return False


def _git_sha() -> str:
    import subprocess

    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""
