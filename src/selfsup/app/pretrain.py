"""Pretraining into a run directory (``selfsup pretrain``), with resume and the kNN monitor, and
the offline demo (``selfsup demo``)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .. import dist
from ..config import Config, dump_config, flatten, load_config
from ..data import pretrain_dataset
from ..errors import ConfigError
from ..eval.knn import knn_eval
from ..train.checkpoint import atomic_write, load_checkpoint
from ..train.loop import FitResult, fit
from .runs import build_for_training, build_from_config, image_dataset, load_encoder

#: keys that may differ between a run and its resumption (everything else must match).
RESUMABLE_CHANGES = (
    "train.epochs",
    "train.progress",
    "train.log_every",
    "train.ckpt_every",
    "train.loggers",
    "train.device",
    "data.num_workers",
    "data.path",
    "knn.",
)


def check_resume_config(saved: dict[str, Any], cfg: Config) -> None:
    """Refuse to resume a checkpoint whose config ``saved`` differs from ``cfg`` beyond
    :data:`RESUMABLE_CHANGES`."""
    a, b = flatten(saved), flatten(cfg.to_dict())
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES)]
    if diff:
        raise ConfigError(
            "cannot resume: the configuration differs from the checkpoint's in "
            + ", ".join(f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in diff[:5])
        )


def knn_monitor(cfg: Config):
    """A kNN evaluation closure for the training loop, or None when ``knn.every`` is 0."""
    if not (cfg.knn.every and cfg.knn.train and cfg.knn.test):
        return None
    d = cfg.data
    train_ds = image_dataset(cfg.knn.train, d.views[0].size, cfg.knn.limit_train, d.mean, d.std)
    test_ds = image_dataset(cfg.knn.test, d.views[0].size, cfg.knn.limit_test, d.mean, d.std)

    def monitor(encoder: nn.Module) -> dict[str, float]:
        k, t, bs, nw = cfg.knn.k, cfg.knn.temperature, cfg.knn.batch_size, cfg.data.num_workers
        res = knn_eval(encoder, train_ds, test_ds, k=k, temperature=t, batch_size=bs, num_workers=nw)
        return {"knn_top1": res["top1"], "knn_top5": res["top5"]}

    return monitor


def pretrain(cfg: Config, out_dir: str | Path, resume: bool = False, max_steps: int | None = None) -> FitResult:
    """Pretrain the method of ``cfg`` on ``cfg.data``; writes the run directory ``out_dir``."""
    out = Path(out_dir)
    ckpt = out / "checkpoints" / "last.pt"
    resuming = resume and ckpt.exists()
    if resuming:
        saved = load_checkpoint(ckpt)
        check_resume_config(saved["config"], cfg)
    elif not resume and ckpt.exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    device = dist.setup_device(cfg.train.device)
    dataset = pretrain_dataset(cfg.data, device)
    dataset.check_readable()
    # a resumed run's weights come from its checkpoint; its start is recorded there
    method, start = (build_from_config(cfg), saved.get("start")) if resuming else build_for_training(cfg)
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.yaml", lambda tmp: Path(tmp).write_text(dump_config(cfg)))
    return fit(
        method,
        dataset,
        cfg.optim,
        cfg.train,
        out,
        resume=resume,
        monitor=knn_monitor(cfg),
        monitor_every=cfg.knn.every,
        record=cfg.to_dict(),
        start=start,
        num_workers=cfg.data.num_workers,
        max_steps=max_steps,
    )


def demo(out: str | Path = "runs/demo", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """SimCLR on scikit-learn's digits (shipped with it: no network), and the kNN top-1 of the
    trained encoder next to that of its random initialization. ``out`` is replaced."""
    cfg = load_config("simclr-demo", list(overrides))
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    d, k, t = cfg.data, cfg.knn.k, cfg.knn.temperature
    train_ds = image_dataset("digits:train", d.views[0].size, 0, d.mean, d.std)
    test_ds = image_dataset("digits:test", d.views[0].size, 0, d.mean, d.std)
    random_init = knn_eval(build_from_config(cfg).encoder, train_ds, test_ds, k, t)
    t0 = time.time()
    res = pretrain(cfg, out)
    trained = knn_eval(load_encoder(out)[0], train_ds, test_ds, k, t)
    return {
        "method": "simclr",
        "backbone": cfg.backbone.name,
        "image_size": d.views[0].size,
        "n_train": len(train_ds),
        "n_test": len(test_ds),
        "k": k,
        "epochs": res.epochs,
        "random_init_top1": random_init["top1"],
        "top1": trained["top1"],
        "train_seconds": round(time.time() - t0, 1),
        "out": str(out),
    }
