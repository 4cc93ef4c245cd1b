"""The one training loop. It knows no method: it calls ``method(views)`` and the method's hooks.

Per step: ``on_step`` -> forward under bf16 autocast (CUDA; opt-in on CPU) -> backward (accumulated over micro
batches, DDP-synchronized on the last) -> scheduled lr / weight decay -> clip -> optimizer step ->
EMA of the method's declared (online, target) pairs. Metrics stay on the device and are read back
every ``log_every`` steps, which is also when a non-finite loss is detected; checkpoints are only
written after such a check, so a run that diverges never overwrites its last good checkpoint.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import dist
from ..config import OptimConfig, TrainConfig
from ..data.dataset import EpochSampler, ViewDataset, sample_seed, warn_skipped
from ..errors import ConfigError, NonFiniteLossError
from ..methods.base import Method, Progress
from ..nn.ema import ema_update
from ..precision import autocast
from .checkpoint import export_backbone, rng_state, save_checkpoint, start_or_resume
from .engine import micro_batch, rank_loader, wrap_model
from .logging import CollapseWatch, MetricsLogger, StepMetrics, StopFlag
from .optim import build_optimizer, build_schedule, clip_grad, scaled_lr

Monitor = Callable[[nn.Module], dict[str, float]]

__all__ = ["FitResult", "Monitor", "NonFiniteLossError", "fit"]


@dataclass
class FitResult:
    steps: int
    epochs: float
    loss: float
    images_per_s: float
    skipped_images: int
    out_dir: Path | None
    last: dict[str, Any] = field(default_factory=dict)


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
    start: dict[str, Any] | None = None,
    num_workers: int = 0,
    augment: Callable[[list[torch.Tensor], int], list[torch.Tensor]] | None = None,
    max_steps: int | None = None,
) -> FitResult:
    """Train ``method`` on ``dataset``; checkpoints, metrics and the exported backbone go to ``out_dir``.

    ``record`` (the resolved config) is stored in checkpoints and export metadata, and ``start``
    (where the backbone's starting weights came from, if not a random init) next to it. ``augment`` turns
    a batch of raw uint8 images into the views on the training device (``data.augment: batched``);
    without it the dataset yields the views. ``max_steps`` stops early after a checkpoint, as a
    preempted job would.
    """
    # -- setup ------------------------------------------------------------------------------------
    augment = augment if augment is not None else dataset.batch_augment
    if dataset.raw and augment is None:
        raise ConfigError("the dataset yields raw images (data.augment=batched): pass augment=BatchedViews(...)")
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "checkpoints" / "last.pt" if out is not None else None
    device = dist.setup_device(train.device)
    world, rank = dist.world_size(), dist.rank()
    micro = micro_batch(train, world)
    method, model = wrap_model(
        method, device, sync_bn=method.sync_bn, channels_last=train.channels_last, compile=train.compile
    )
    peak_lr = scaled_lr(optim, train.batch_size)
    optimizer = build_optimizer(method.param_groups(), optim, peak_lr, device)
    sampler = EpochSampler(len(dataset), train.batch_size, seed=train.seed, rank=rank, world=world)
    spe = sampler.steps_per_epoch
    if spe == 0:
        raise ConfigError(f"train.batch_size={train.batch_size} is larger than the dataset ({len(dataset)} images)")
    total = spe * train.epochs
    stop_at = total if max_steps is None else min(total, max_steps)
    schedule = build_schedule(optim, peak_lr, total, spe)
    loader = rank_loader(dataset, sampler, micro, num_workers, device, train.seed)
    logger = MetricsLogger(out, enabled=dist.is_main(), loggers=train.loggers, config=record)
    step = start_or_resume(method, optimizer, logger, ckpt_path if resume else None, world, device)
    step_start, t_start = step, time.perf_counter()

    def checkpoint() -> None:
        if ckpt_path is not None and dist.is_main():
            state = {"format": 1, "model": method.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
            state.update(rng=rng_state(), config=record or {}, world_size=world, start=start)
            save_checkpoint(ckpt_path, state)
        dist.barrier()

    metrics = StepMetrics(device, ckpt_path)
    bf16 = autocast(device, train.precision)
    collapse = CollapseWatch(train.collapse_threshold, train.collapse_window)
    bar = tqdm(total=total, initial=step, disable=not (train.progress and dist.is_main()), unit="step", desc="pretrain")
    skipped: set[str] = set()
    last: dict[str, Any] = {}
    stopping = False

    def read_back() -> None:
        """The metric read-back: log the record, and learn whether any rank was asked to stop."""
        nonlocal stopping, last
        rec, stop_asked = metrics.read(step, stop.signal is not None)
        stopping = stopping or stop_asked
        if rec:
            lr, wd = optimizer.param_groups[0]["lr"], float(schedule.weight_decay[step - 1])
            last = {"step": step, "epoch": round(step / spe, 4), **rec, "lr": lr, "weight_decay": wd}
            logger.log(last)
            collapse.update(rec.get("z_std"), step)
            bar.set_postfix(loss=f"{rec['loss']:.4f}")

    # -- the step loop (the shape of dino's train_one_epoch) ---------------------------------------
    with StopFlag() as stop:
        while step < stop_at:
            epoch = step // spe
            sampler.set_position(epoch, step % spe)
            model.train()
            for i, batch in enumerate(loader):
                first, last_micro = i % train.accum_steps == 0, i % train.accum_steps == train.accum_steps - 1
                progress = Progress(step, total, spe, train.seed)
                warn_skipped(batch["skipped"], skipped)
                if first:
                    method.on_step(progress)
                views = [v.to(device, non_blocking=True) for v in batch["views"]]
                if augment is not None:  # seeded by position, so a resumed run draws the same views
                    micro_index = (step % spe) * train.accum_steps + i % train.accum_steps
                    views = augment(views, sample_seed(train.seed, epoch, micro_index * world + rank))
                if train.channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                with contextlib.nullcontext() if last_micro or world == 1 else model.no_sync():
                    with bf16:
                        output = model(views)
                    (output.loss / train.accum_steps).backward()
                metrics.add(output.loss, output.logs, 1 / train.accum_steps, views[0].shape[0] * world)
                if not last_micro:
                    continue
                schedule.apply(optimizer, step)
                clip_grad(method, optim.clip_grad, optim.clip_mode)
                method.after_backward(progress)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                for online, target in method.ema_pairs():
                    ema_update(online, target, method.ema_momentum(progress), method.ema_buffers)
                step += 1
                metrics.end_step()
                bar.update(1)
                end_of_epoch, done = step % spe == 0, step == stop_at
                if step % train.log_every == 0 or end_of_epoch or done or (world == 1 and stop.signal is not None):
                    read_back()
                if stopping or done or end_of_epoch or (train.ckpt_every and step % train.ckpt_every == 0):
                    read_back()  # a checkpoint only after a read-back found every loss finite
                    checkpoint()
                if stopping:
                    bar.close()
                    raise KeyboardInterrupt(f"stopped by signal {stop.signal} at step {step}; resume with --resume")
                if done:
                    break
            if step % spe == 0 and monitor is not None and monitor_every and (step // spe) % monitor_every == 0:
                _run_monitor(monitor, method, logger, step, spe, last)

    # -- finish -----------------------------------------------------------------------------------
    bar.close()
    elapsed = time.perf_counter() - t_start
    if out is not None and dist.is_main() and step == total:
        export_backbone(method.encoder, out / "backbone.safetensors", record, start)
        logger.artifact(out / "backbone.safetensors")
    if skipped:
        warnings.warn(f"{len(skipped)} unreadable image(s) were skipped during training", stacklevel=2)
    logger.close()
    images_per_s = (step - step_start) * train.batch_size / max(elapsed, 1e-9)
    return FitResult(step, step / spe, float(last.get("loss", float("nan"))), images_per_s, len(skipped), out, last)


def _run_monitor(monitor: Monitor, method: Method, logger: MetricsLogger, step: int, spe: int, last: dict) -> None:
    """The kNN monitor on rank 0 at an epoch end; the other ranks wait."""
    if dist.is_main():
        res = monitor(method.encoder)
        logger.log({"step": step, "epoch": step / spe, **res})
        last.update(res)
        method.train()
    dist.barrier()
