"""Experiment trackers beside ``metrics.jsonl``: TensorBoard, Weights & Biases and MLflow.

Each tracker receives the records ``metrics.jsonl`` gets (training scalars and the kNN monitor's
results, at their global step), the resolved config once, and the exported backbone as an artifact.
Only rank 0 builds them (the loop's :class:`~selfsup.train.logging.MetricsLogger` is disabled on the
others). W&B and MLflow are optional extras, configured by their own environment variables as users
set them (``WANDB_MODE``, ``WANDB_DIR``, ``WANDB_PROJECT``, ``MLFLOW_TRACKING_URI``,
``MLFLOW_EXPERIMENT_NAME``); the run directory remembers their run ids, so a resumed run continues
the same tracker run.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

from ..config import flatten
from ..errors import ConfigError

#: the default project (W&B) or experiment (MLflow) when the environment names none
DEFAULT_PROJECT = "selfsup"


class Tracker(Protocol):
    def log(self, step: int, scalars: dict[str, float]) -> None: ...
    def artifact(self, path: Path) -> None: ...
    def close(self) -> None: ...


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f'train.loggers: {extra} needs the {module!r} package: pip install "selfsup[{extra}]"'
        ) from None


def _run_id(out: Path, name: str, new) -> tuple[str, bool]:
    """The tracker run id stored in the run directory (``name``), or a new one from ``new()``; and
    whether it is new."""
    path = out / name
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip(), False
    run_id = str(new())
    path.write_text(run_id + "\n")
    return run_id, True


class TensorBoardTracker:
    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out / "tb"))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=1) + "\n```", 0)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)

    def artifact(self, path: Path) -> None:
        pass  # TensorBoard keeps no files

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A W&B run (``wandb.init``): ``WANDB_MODE=offline`` writes it under ``WANDB_DIR`` (default: the
    run directory) for a later ``wandb sync``; ``WANDB_PROJECT`` names the project (default selfsup)."""

    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        wandb = _require("wandb", "wandb")
        self.wandb = wandb
        run_id, _ = _run_id(out, "wandb-run-id", lambda: secrets.token_hex(4))  # W&B ids: [a-z0-9]
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            dir=None if os.environ.get("WANDB_DIR") else str(out),
            id=run_id,
            name=out.name,
            resume="allow",
            config=config,
        )
        self._last = -1

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if step < self._last:  # a resumed run repeats steps W&B already has: it would drop them anyway
            return
        self._last = step
        self.run.log(scalars, step=step)

    def artifact(self, path: Path) -> None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{self.run.name or self.run.id}-{path.stem}")
        art = self.wandb.Artifact(name, type="model")
        art.add_file(str(path))
        self.run.log_artifact(art)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    """An MLflow run through ``MlflowClient`` (``MLFLOW_TRACKING_URI``; the experiment from
    ``MLFLOW_EXPERIMENT_NAME``, default selfsup): the flattened config as parameters and as
    ``config.json``, the scalars as metrics, the export as an artifact."""

    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        mlflow = _require("mlflow", "mlflow")
        from mlflow.entities import Param

        self.client = mlflow.MlflowClient()
        self.Metric = mlflow.entities.Metric

        def create() -> str:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_PROJECT
            exp = self.client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
            return self.client.create_run(exp_id, run_name=out.name).info.run_id

        self.run_id, new = _run_id(out, "mlflow-run-id", create)
        if new:  # parameters are write-once in MLflow: a resumed run keeps those it started with
            params = [Param(k[:250], str(v)[:6000]) for k, v in flatten(config).items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[i : i + 100])
            self.client.log_dict(self.run_id, config, "config.json")
        else:
            self.client.update_run(self.run_id, status="RUNNING")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        metrics = [self.Metric(re.sub(r"[^\w\-./ ]", "_", k), v, now, step) for k, v in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


def build_trackers(names: list[str], out: Path, config: dict[str, Any]) -> list[Tracker]:
    """The trackers ``names`` (``train.loggers``, ``jsonl`` aside) writing for the run ``out``."""
    if "jsonl" not in names:
        raise ConfigError(
            f"train.loggers={list(names)} must include jsonl: metrics.jsonl is the run's own record "
            "(resume and selfsup report read it)"
        )
    unknown = [n for n in names if n != "jsonl" and n not in TRACKERS]
    if unknown:
        raise ConfigError(f"train.loggers: unknown logger {unknown[0]!r}; known: jsonl, {', '.join(TRACKERS)}")
    trackers: list[Tracker] = []
    for n in names:
        if n == "tensorboard":
            try:
                trackers.append(TensorBoardTracker(out, config))
            except ImportError:  # pragma: no cover - tensorboard is a dependency, but be lenient
                warnings.warn("tensorboard is not installed; metrics go to metrics.jsonl only", stacklevel=3)
        elif n != "jsonl":
            trackers.append(TRACKERS[n](out, config))
    return trackers
