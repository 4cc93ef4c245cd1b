"""What the loop records: metrics to ``metrics.jsonl`` and the trackers (rank 0 only), the metric
read-back with its cross-rank stop and NaN agreement, the collapse warning and the stop signal."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from .. import dist
from ..errors import NonFiniteLossError
from .trackers import Tracker, build_trackers


class MetricsLogger:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors the scalars of records with a
    ``step`` to the trackers of ``loggers`` (``train.loggers``: TensorBoard, W&B, MLflow; see
    :mod:`selfsup.train.trackers`), which also get ``config`` (the run's resolved config) and, through
    :meth:`artifact`, the exported backbone.

    ``resume_from(step)`` drops records past ``step``, written by a run that died after its last
    checkpoint, so the resumed run's curves have no duplicate steps.
    """

    def __init__(
        self,
        out_dir: Path | None,
        enabled: bool = True,
        loggers: list[str] | tuple[str, ...] = ("jsonl", "tensorboard"),
        config: dict[str, Any] | None = None,
    ):
        self.enabled = enabled and out_dir is not None
        self.path = Path(out_dir) / "metrics.jsonl" if out_dir is not None else None
        self.trackers: list[Tracker] = []
        if self.enabled:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            self.trackers = build_trackers(list(loggers), Path(out_dir), config or {})

    def resume_from(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if rec.get("step", 0) <= step:
                keep.append(line)
        self.path.write_text("".join(k + "\n" for k in keep))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")
        if self.trackers and "step" in record and "event" not in record:
            scalars = {
                k: float(v)
                for k, v in record.items()
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
            }
            for t in self.trackers:
                t.log(int(record["step"]), scalars)

    def artifact(self, path: Path) -> None:
        """A file the run produced (the exported backbone), for the trackers that keep files."""
        for t in self.trackers:
            t.artifact(Path(path))

    def close(self) -> None:
        for t in self.trackers:
            t.close()
        self.trackers = []


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class StepMetrics:
    """The loop's metrics between two read-backs. Sums stay on the device, so a step has no host
    sync; :meth:`read` is the one sync. It averages over the steps since the last read and across
    ranks, together with whether any loss was non-finite and whether any rank was asked to stop, so
    every rank raises or stops after the same step."""

    def __init__(self, device: torch.device, checkpoint: Path | None = None) -> None:
        self.device, self.checkpoint = device, checkpoint
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self._reset(time.perf_counter())

    def _reset(self, now: float) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.logs: dict[str, torch.Tensor] = {}
        self.steps, self.images, self.since = 0, 0, now

    def add(self, loss: torch.Tensor, logs: dict[str, torch.Tensor], weight: float, images: int) -> None:
        """One micro-batch: its loss and logs, ``weight`` its share of the step."""
        loss = loss.detach()
        self.loss += loss.float() * weight
        self.bad |= ~torch.isfinite(loss)
        for k, v in logs.items():
            self.logs[k] = self.logs.get(k, 0) + v.detach().float() * weight
        self.images += images

    def end_step(self) -> None:
        self.steps += 1

    def read(self, step: int, signalled: bool) -> tuple[dict[str, float], bool]:
        """``({loss, logs..., images_per_s}, stop)`` over the steps since the last read (``{}`` when
        there were none); raises :class:`NonFiniteLossError` when any rank saw a non-finite loss."""
        if self.steps == 0:
            return {}, False
        n = self.steps
        flags = [self.bad.float() * n, torch.tensor(float(signalled) * n, device=self.device)]
        vals = torch.stack([self.loss, *self.logs.values(), *flags]) / n
        if dist.world_size() > 1:
            vals = dist.all_reduce_sum(vals) / dist.world_size()
        *means, bad, stop = vals.tolist()
        if bad > 0 or not math.isfinite(means[0]):
            last_good = self.checkpoint if self.checkpoint is not None and self.checkpoint.exists() else None
            raise NonFiniteLossError(
                f"non-finite loss at or before step {step}; stopped without writing a checkpoint"
                + (f" (last good one: {last_good})" if last_good else "")
                + ". Lower optim.lr or check the data."
            )
        now = time.perf_counter()
        rec = {"loss": means[0], **dict(zip(self.logs, means[1:]))}
        rec["images_per_s"] = self.images / max(now - self.since, 1e-9)
        self._reset(now)
        return rec, stop > 0


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


class StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint at the end of the current step and stop."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
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


def git_sha() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""
