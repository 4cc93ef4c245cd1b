"""Ready for the GPU: every method, the ViT presets, the ResNet-50 throughput ratio and a CIFAR-10 sprint, in one run.

    python benchmarks/gpu_check.py --out runs/gpu_check              # about 8 minutes on one H200 (--minutes)
    python benchmarks/gpu_check.py --out /tmp/gpu_check --smoke      # the same code paths on CPU, tiny, seconds

Three phases, budgeted by wall clock out of ``--minutes`` (deadlines are cumulative, so time a phase
leaves unused goes to the next one):

1. ``items`` (until 45% of the budget): each registered method's ``<name>-cifar10`` preset, the same
   SimCLR preset with ``train.compile=true``, and every ViT preset with its views scaled to
   ``--vit-size`` (local crops too, rounded to the patch size; ``backbone.img_size`` to match), each
   for ``--steps`` steps through ``selfsup.fit`` on the real data path (CIFAR-10 JPEGs decoded once,
   held on the device, views augmented there: ``data.cache=true``), bf16 autocast and channels-last, batch
   the preset's up to ``--max-batch``. Recorded per item: the loss and whether it is finite,
   steps/s after ``--warmup`` steps (from the loop's own metric records), peak device memory, whether
   the EMA targets (``ema_pairs()``) and the queue buffers moved (SwAV's queue starts at once here),
   or the error. An item that starts after the phase's deadline is recorded as skipped.
2. ``throughput`` (until 57%): SimCLR on ResNet-50 at ``--r50-size`` px (``simclr-imagenet``), bf16 and
   channels-last: the full training step (``selfsup.fit``, views from the data path) against the
   model-only step (forward, backward, optimizer on random tensors already on the device), and the ratio;
   then the same full step reading generated ImageNet-size JPEGs from shards as shipped (nvJPEG decode
   and crops on the device), and its ratio to the model-only step (goal: 0.9).
3. ``sprint`` (the rest): ``simclr-cifar10-sprint`` on all training images with the epoch count fitted
   to the time left (from a short calibration run's images/s; at most the preset's epochs), through
   ``selfsup.pretrain``, then weighted kNN top-1 (k=200, T=0.1) of the exported encoder with the
   training images as the bank and the test images as queries. A timer asks the loop to stop (SIGINT:
   checkpoint, stop) if the run outlasts its budget; the encoder is then read from the checkpoint.

Data: ``--data DIR`` (an ImageFolder CIFAR-10 with ``train/`` and ``test/``), else the shared archive
``../shared/data/cifar10-jpeg.tar.gz`` extracted once, else (with a warning) synthetic images.
``--smoke`` runs every phase on the CPU (one thread) on 64 synthetic images per split (or a 64-image
subset of ``--data``), two steps an item, at tiny sizes (16 px CIFAR views, 32 px ViT views of 2 blocks, ResNets at
``backbone.width=8``, DINO's prototypes capped at 4,096, batch 8), torch.compile with dynamo's ``eager``
backend (graph capture without code generation), and one sprint epoch.

Output: ``OUT/gpu_check.json`` (rewritten after every item), a summary on stdout; exit status 1 when
any item, the throughput or the sprint failed. Needs nothing beyond this checkout and the archive.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: the shared archive beside the checkout, else a copy inside it (``.data/`` is git-ignored: copy the archive
#: there to carry it to a machine that has the checkout only)
ARCHIVES = [REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz", REPO / ".data" / "cifar10-jpeg.tar.gz"]
ARCHIVE = next((a for a in ARCHIVES if a.is_file()), ARCHIVES[0])
if (REPO / "src" / "selfsup").is_dir():
    sys.path.insert(0, str(REPO / "src"))  # this checkout's selfsup, installed or not
sys.path.insert(0, str(Path(__file__).resolve().parent))  # throughput.py, next to this file

import numpy as np  # noqa: E402
import torch  # noqa: E402

import selfsup  # noqa: E402
from selfsup import build_from_config, knn_eval, load_config, load_encoder  # noqa: E402
from selfsup.app.runs import run_dataset  # noqa: E402
from selfsup.config import list_presets  # noqa: E402
from selfsup.data import expand_views  # noqa: E402
from selfsup.data.archive import ensure_extracted  # noqa: E402
from selfsup.methods import METHODS  # noqa: E402
from selfsup.train.logging import git_sha, read_metrics  # noqa: E402

SPRINT = "simclr-cifar10-sprint"
R50 = "simclr-imagenet"
KNN_K, KNN_T = 200, 0.1
#: cumulative deadlines of the phases, as fractions of --minutes
ITEMS_END, THROUGHPUT_END = 0.45, 0.57
#: seconds kept after the sprint's training for its kNN evaluation (60,000 JPEGs decoded and encoded)
EVAL_RESERVE_S = 45.0
#: per-epoch allowance on top of the calibrated step time (epoch-end read-back and checkpoint)
EPOCH_OVERHEAD = 1.08
#: fixed start-up of the sprint's run (dataset, model, first steps' kernel selection)
SPRINT_STARTUP_S = 8.0


# ------------------------------------------------------------------------------------------------
# data


def synthetic_imagefolder(root: Path, n_train: int, n_test: int, size: int = 32, classes: int = 10) -> Path:
    """An ImageFolder ``train/`` and ``test/`` of JPEGs: a class-coloured square on noise, at a random place."""
    from PIL import Image

    rng = np.random.default_rng(0)
    colors = rng.integers(0, 256, size=(classes, 3))
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            y = i % classes
            img = rng.integers(0, 80, size=(size, size, 3)).astype(np.uint8)
            s = size // 2
            r, c = rng.integers(0, size - s + 1, size=2)
            img[r : r + s, c : c + s] = colors[y]
            folder = root / split / f"class{y}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=95)
    return root


def count_images(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def prepare_data(args, work: Path) -> dict[str, Any]:
    """``{"root", "kind", "limit", "train_images", "test_images"}`` of the data every phase uses."""
    limit = 0
    if args.data:
        root, kind = Path(args.data).expanduser(), "--data"
        limit = 64 if args.smoke else 0
    elif args.smoke:
        root, kind = synthetic_imagefolder(work / "data", 64, 64), "synthetic (smoke)"
    elif ARCHIVE.is_file():
        root, kind = ensure_extracted(ARCHIVE) / "cifar10", f"cifar10 ({ARCHIVE.name})"
    else:
        print(f"gpu_check: {ARCHIVE} not found and no --data: synthetic images (the sprint's kNN means nothing)")
        root, kind = synthetic_imagefolder(work / "data", 4096, 1000), "synthetic (no CIFAR-10 found)"
    for split in ("train", "test"):
        if not (root / split).is_dir():
            sys.exit(f"gpu_check: {root / split} is not a directory (expected an ImageFolder with train/ and test/)")
    n_train, n_test = count_images(root / "train"), count_images(root / "test")
    if limit:
        n_train, n_test = min(n_train, limit), min(n_test, limit)
    return {"root": str(root), "kind": kind, "limit": limit, "train_images": n_train, "test_images": n_test}


# ------------------------------------------------------------------------------------------------
# one item: a preset for a few steps through selfsup.fit


def _is_queue(name: str, buf: torch.Tensor) -> bool:
    return "queue" in name.rsplit(".", 1)[-1] and buf.is_floating_point()


@contextlib.contextmanager
def compile_backend(backend: str):
    """``torch.compile`` with ``backend`` inside the block (inductor, torch's default, needs no change)."""
    if backend == "inductor":
        yield
        return
    original = torch.compile
    torch.compile = functools.partial(original, backend=backend)
    try:
        yield
    finally:
        torch.compile = original


def _device_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def _rate(records: list[dict], warmup: int) -> float | None:
    """Images/s over the steps after the first ``warmup`` (the last record's if none), from the loop's
    metric records: each gives the images/s of the steps since the record before it."""
    recs = [r for r in records if isinstance(r.get("images_per_s"), int | float) and r["images_per_s"] > 0]
    windows = [(r["step"] - (recs[i - 1]["step"] if i else 0), r) for i, r in enumerate(recs)]
    timed = [(n, r) for n, r in windows if r["step"] > warmup] or windows[-1:]
    steps = sum(n for n, _ in timed)
    return steps / sum(n / r["images_per_s"] for n, r in timed) if steps else None


def _cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_item(name: str, preset: str, overrides: list[str], args, device, work: Path, backend: str) -> dict:
    """Train ``preset`` with ``overrides`` for ``args.steps`` steps; the item's record (never raises)."""
    rec: dict[str, Any] = {"name": name, "preset": preset, "overrides": overrides, "ok": False}
    run_dir = Path(tempfile.mkdtemp(dir=work, prefix="item-"))
    t0 = time.perf_counter()
    method = dataset = targets = ema_before = queues = None
    try:
        cfg = load_config(preset, overrides)
        rec.update(batch_size=cfg.train.batch_size, precision=cfg.train.precision, compile=cfg.train.compile)
        rec["view_sizes"] = [v.size for v in expand_views(cfg.data.views)]
        method = build_from_config(cfg)
        targets = [p for _, target in method.ema_pairs() for p in target.parameters()]
        ema_before = [p.detach().clone() for p in targets]
        queues = {n: b.detach().clone() for n, b in method.named_buffers() if _is_queue(n, b)}
        dataset = selfsup.pretrain_dataset(cfg.data, device)
        dataset.check_readable()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with compile_backend(backend):
            res = selfsup.fit(
                method,
                dataset,
                cfg.optim,
                cfg.train,
                run_dir,
                record=cfg.to_dict(),
                num_workers=cfg.data.num_workers,
                max_steps=args.steps,
            )
        _device_sync(device)
        ips = _rate(read_metrics(run_dir), args.warmup)
        rec.update(
            loss=res.loss,
            loss_finite=math.isfinite(res.loss),
            steps=res.steps,
            images_per_s=None if ips is None else round(ips, 1),
            steps_per_s=None if ips is None else round(ips / cfg.train.batch_size, 3),
            peak_mem_mb=_peak_mb(device),
        )
        if targets:
            change = max(float((a - p.detach().cpu()).abs().max()) for a, p in zip(ema_before, targets))
            rec["ema"] = {"pairs": len(method.ema_pairs()), "moved": change > 0, "max_abs_change": change}
        else:
            rec["ema"] = None
        if queues:
            now = dict(method.named_buffers())
            moved = {n: not torch.equal(b, now[n].detach().cpu()) for n, b in queues.items()}
            rec["queue"] = {"buffers": sorted(moved), "moved": all(moved.values())}
        else:
            rec["queue"] = None
        rec["ok"] = bool(
            rec["loss_finite"]
            and (rec["ema"] is None or rec["ema"]["moved"])
            and (rec["queue"] is None or rec["queue"]["moved"])
        )
    except Exception as e:  # noqa: BLE001 - an item that fails is recorded, the check goes on
        rec["error"] = f"{type(e).__name__}: {e}"[:2000]
        rec["traceback"] = traceback.format_exc()[-4000:]
    finally:
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        del method, dataset, targets, ema_before, queues
        if rec.get("compile"):
            torch._dynamo.reset()
        shutil.rmtree(run_dir, ignore_errors=True)
        _cleanup(device)
    return rec


# ------------------------------------------------------------------------------------------------
# the item plan


def _patch(backbone: str) -> int:
    m = re.search(r"patch(\d+)", backbone)
    return int(m.group(1)) if m else 1


def view_size_overrides(preset: str, size: int, patch: int = 1) -> list[str]:
    """``data.views.<i>.size`` with the largest view at ``size`` and the others scaled alike
    (rounded to a multiple of ``patch``, at least one patch)."""
    views = load_config(preset).data.views
    top = max(v.size for v in views)
    out = []
    for i, v in enumerate(views):
        s = v.size * size / top
        out.append(f"data.views.{i}.size={max(patch, round(s / patch) * patch)}")
    return out


def common_overrides(preset: str, args, data: dict, device) -> list[str]:
    """What every run of the check sets: the data path, batch, steps, precision, device."""
    cfg = load_config(preset)
    batch = min(cfg.train.batch_size, args.max_batch)
    steps_per_epoch = max(1, data["train_images"] // batch)
    tiny = (
        [f"backbone.width={args.resnet_width}"] if args.resnet_width and cfg.backbone.name.startswith("resnet") else []
    )
    if args.max_out_dim and getattr(cfg.method, "out_dim", 0) > args.max_out_dim:
        tiny.append(f"method.out_dim={args.max_out_dim}")  # DINO's 65,536 prototypes
    return [
        *tiny,
        f"data.path={data['root']}/train",
        f"data.limit={data['limit']}",
        "data.cache=true",  # decoded once, held on the device, views augmented there (the default path)
        "data.num_workers=0",
        f"train.batch_size={batch}",
        f"train.epochs={max(1, math.ceil(args.steps / steps_per_epoch))}",
        f"train.log_every={args.log_every}",
        "train.progress=false",
        f"train.device={device.type}",
        f"train.precision={args.precision}",
        "train.channels_last=true",
    ]


def item_plan(args, data: dict, device) -> list[tuple[str, str, list[str]]]:
    """``(name, preset, overrides)``: SimCLR eager and compiled first, the other methods, the ViT presets."""
    presets = set(list_presets())
    names = sorted(METHODS.names(), key=lambda m: m != "simclr")
    plan = []
    for m in names:
        preset = f"{m}-cifar10"
        if preset not in presets:
            plan.append((preset, preset, []))  # fails in load_config, and is recorded as such
            continue
        cfg = load_config(preset)
        if cfg.backbone.name.startswith("vit"):
            continue  # a ViT preset (MAE's CIFAR-10 one): with the ViT presets below, at --vit-size
        extra = view_size_overrides(preset, args.size) if args.size else []
        if getattr(cfg.method, "queue_length", 0) and hasattr(cfg.method, "queue_start_epoch"):
            extra.append("method.queue_start_epoch=0")  # SwAV: the queue from the first step, so it is exercised
        plan.append((preset, preset, common_overrides(preset, args, data, device) + extra))
        if m == "simclr":
            compiled = common_overrides(preset, args, data, device) + extra + ["train.compile=true"]
            plan.append((f"{preset}+compile", preset, compiled))
    for preset in sorted(presets):
        backbone = load_config(preset).backbone.name
        if backbone.startswith("vit"):
            patch = _patch(backbone)
            top = max(patch, round(args.vit_size / patch) * patch)  # the largest view, a whole number of patches
            extra = [*view_size_overrides(preset, args.vit_size, patch), f"backbone.img_size={top}"]
            extra += [f"backbone.depth={args.vit_depth}"] if args.vit_depth else []
            plan.append((preset, preset, common_overrides(preset, args, data, device) + extra))
    return plan


# ------------------------------------------------------------------------------------------------
# throughput: the full step against the model-only step


def model_only_rate(cfg, args, device) -> float:
    """Images/s of forward, backward, optimizer step and EMA on random views already on the device."""
    from throughput import model_only_step  # benchmarks/throughput.py, next to this file

    batch = cfg.train.batch_size
    step = model_only_step(cfg, batch, device)
    for _ in range(args.warmup):
        step()
    _device_sync(device)
    t0 = time.perf_counter()
    timed = max(1, args.steps - args.warmup)
    for i in range(timed):
        loss = step()
        if (i + 1) % args.log_every == 0:  # the loop's read-back cadence
            loss.item()
    _device_sync(device)
    return timed * batch / (time.perf_counter() - t0)


def throughput(args, data: dict, device, work: Path) -> dict:
    overrides = common_overrides(R50, args, data, device) + view_size_overrides(R50, args.r50_size)
    overrides = [o for o in overrides if not o.startswith("train.batch_size=")] + [f"train.batch_size={args.r50_batch}"]
    full = run_item(f"{R50}-full-step", R50, overrides, args, device, work, args.compile_backend)
    out: dict[str, Any] = {
        "preset": R50,
        "backbone": "resnet50",
        "size": args.r50_size,
        "batch": args.r50_batch,
        "precision": args.precision,
        "channels_last": True,
        "augment": "batched, decoded once, device-resident",
        "full_step": full,
        "full_step_images_per_s": full.get("images_per_s"),
    }
    t0 = time.perf_counter()
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rate = model_only_rate(load_config(R50, overrides), args, device)
        out["model_only_images_per_s"] = round(rate, 1)
        out["model_only_peak_mem_mb"] = _peak_mb(device)
    except Exception as e:  # noqa: BLE001
        out["model_only_error"] = f"{type(e).__name__}: {e}"[:2000]
    finally:
        _cleanup(device)
    out["model_only_seconds"] = round(time.perf_counter() - t0, 1)
    a, b = out.get("full_step_images_per_s"), out.get("model_only_images_per_s")
    out["ratio"] = round(a / b, 3) if a and b else None
    out["ok"] = bool(full["ok"] and out["ratio"] is not None)
    out["shards"] = shards_full_step(args, overrides, device, work, b)
    return out


def shards_full_step(args, overrides: list[str], device, work: Path, model_only: float | None) -> dict:
    """The same full step reading ImageNet-size JPEGs from shards, as shipped (on CUDA: the workers
    read the bytes, the JPEGs are decoded in batches by nvJPEG and cropped on the device)."""
    from data_throughput import make_images  # benchmarks/data_throughput.py, next to this file

    n, size = (64, "160x120") if args.smoke else (10 * args.r50_batch, "500x375")
    t0 = time.perf_counter()
    try:
        images = make_images(work / "jpegs", n, size)
    except Exception as e:  # noqa: BLE001
        return {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
    made_s = round(time.perf_counter() - t0, 1)
    keep = ("data.path=", "data.limit=", "data.cache=", "data.num_workers=", "train.epochs=")
    workers = 0 if args.smoke else min(8, os.cpu_count() or 1)
    epochs = math.ceil(args.steps / max(1, n // args.r50_batch))
    shard_overrides = [o for o in overrides if not o.startswith(keep)] + [
        f"data.path={images['shards']}",
        "data.cache=false",
        f"data.num_workers={workers}",
        f"train.epochs={epochs}",
    ]
    rec = run_item(f"{R50}-full-step-shards", R50, shard_overrides, args, device, work, args.compile_backend)
    ips = rec.get("images_per_s")
    return {
        "images": n,
        "image_size": size,
        "make_and_pack_s": made_s,
        "num_workers": workers,
        "full_step": rec,
        "full_step_images_per_s": ips,
        "ratio": round(ips / model_only, 3) if ips and model_only else None,
        "goal_ratio": 0.9,
        "ok": bool(rec["ok"]),
    }


# ------------------------------------------------------------------------------------------------
# sprint


@contextlib.contextmanager
def stop_after(seconds: float):
    """SIGINT to this process after ``seconds`` (none when infinite): the loop checkpoints and stops at
    its next read-back. Yields an event that is set when the timer fired."""
    fired = threading.Event()
    if not math.isfinite(seconds):
        yield fired
        return

    def fire() -> None:
        fired.set()
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(max(1.0, seconds), fire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def sprint(args, data: dict, device, work: Path, t_end: float) -> dict:
    common = common_overrides(SPRINT, args, data, device) + (
        view_size_overrides(SPRINT, args.size) if args.size else []
    )
    # the run: the preset's epochs replaced by the fitted ones, the preset's metric cadence
    run_overrides = [o for o in common if not o.startswith(("train.epochs=", "train.log_every="))]
    out: dict[str, Any] = {"preset": SPRINT, "ok": False, "knn": {"k": KNN_K, "temperature": KNN_T}}
    preset_epochs = load_config(SPRINT).train.epochs
    # calibration: the sprint's own step, timed as an item is
    calib = run_item(f"{SPRINT}-calibration", SPRINT, common, args, device, work, args.compile_backend)
    out["calibration"] = calib
    left = t_end - time.monotonic()
    reserve = 0.0 if args.smoke else EVAL_RESERVE_S
    out["budget_s"] = round(left - reserve, 1)
    ips = calib.get("images_per_s")
    epoch_s = data["train_images"] / ips * EPOCH_OVERHEAD if ips else None
    fitted = max(1, int((left - reserve - SPRINT_STARTUP_S) / epoch_s)) if epoch_s else 1
    epochs = args.sprint_epochs or min(preset_epochs, fitted)
    out.update(
        epochs=epochs,
        preset_epochs=preset_epochs,
        fitted_epochs=fitted,
        estimated_epoch_s=None if epoch_s is None else round(epoch_s, 2),
        estimated_train_s=None if epoch_s is None else round(SPRINT_STARTUP_S + epochs * epoch_s, 1),
        train_images=data["train_images"],
        test_images=data["test_images"],
    )
    run_dir = work / "sprint"
    t0 = time.perf_counter()
    try:
        cfg = load_config(SPRINT, [*run_overrides, f"train.epochs={epochs}"])
        out["batch_size"] = cfg.train.batch_size
        stopped = False
        try:
            with stop_after(left - reserve if not args.sprint_epochs else math.inf) as fired:
                res = selfsup.pretrain(cfg, run_dir)
        except KeyboardInterrupt:
            if not fired.is_set():
                raise
            stopped, res = True, None
        out["train_s"] = round(time.perf_counter() - t0, 1)
        out["stopped_early"] = stopped
        if res is not None:
            out.update(steps=res.steps, final_loss=res.loss, images_per_s=round(res.images_per_s, 1))
        else:  # stopped by the timer: the last metric record before its checkpoint
            last = [r for r in read_metrics(run_dir) if "loss" in r][-1]
            out.update(steps=last["step"], final_loss=last["loss"])
        out["epochs_done"] = round(out["steps"] / max(1, data["train_images"] // cfg.train.batch_size), 2)
        t1 = time.perf_counter()
        encoder, _ = load_encoder(run_dir)  # backbone.safetensors, or the checkpoint of a stopped run
        workers = 0 if args.smoke else min(8, os.cpu_count() or 1)
        bank = run_dataset(f"{data['root']}/train", cfg, data["limit"])
        test = run_dataset(f"{data['root']}/test", cfg, data["limit"])
        knn = knn_eval(encoder, bank, test, KNN_K, KNN_T, batch_size=1024, device=device, num_workers=workers)
        out["knn"].update(top1=knn["top1"], top5=knn["top5"], bank=len(bank), queries=len(test))
        out["knn_top1"] = knn["top1"]
        out["eval_s"] = round(time.perf_counter() - t1, 1)
        out["ok"] = bool(0.0 <= knn["top1"] <= 1.0 and math.isfinite(out["final_loss"]))
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {e}"[:2000]
        out["traceback"] = traceback.format_exc()[-4000:]
    finally:
        _cleanup(device)
    return out


# ------------------------------------------------------------------------------------------------
# report


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def item_line(r: dict) -> str:
    if r.get("skipped"):
        return f"  {r['name']:<34} SKIP  {r['skipped']}"
    if "error" in r:
        return f"  {r['name']:<34} FAIL  {r['error'][:150]}"
    ema = "-" if r["ema"] is None else ("moved" if r["ema"]["moved"] else "STILL")
    queue = "-" if r["queue"] is None else ("moved" if r["queue"]["moved"] else "STILL")
    return (
        f"  {r['name']:<34} {'ok' if r['ok'] else 'FAIL':<5} loss {_fmt(r['loss'], '8.4f')}  "
        f"{_fmt(r['steps_per_s'], '7.2f')} steps/s  {_fmt(r['peak_mem_mb'], '8.0f')} MB  ema {ema:<5}  queue {queue}"
    )


def summary(report: dict) -> list[str]:
    env = report["environment"]
    lines = [
        f"gpu_check{' --smoke' if report['smoke'] else ''}: {env['device_name']}, torch {env['torch']}, "
        f"{report['minutes']} min budget, data {report['data']['kind']}, git {env['git'][:10] or '-'}",
        "items (preset: ok, last loss, steps/s after warm-up, peak memory, EMA targets, queues):",
        *[item_line(r) for r in report["items"]],
    ]
    c = report.get("compile")
    if c:
        lines.append(
            f"compile {c['preset']}: eager {_fmt(c['eager_steps_per_s'], '.2f')} steps/s, compiled "
            f"{_fmt(c['compiled_steps_per_s'], '.2f')} steps/s (x{_fmt(c['speedup'], '.2f')}, backend {c['backend']})"
        )
    t = report.get("throughput")
    if t and t.get("skipped"):
        lines.append(f"throughput: SKIP {t['skipped']}")
    elif t:
        err = t["full_step"].get("error") or t.get("model_only_error")
        lines.append(
            f"throughput SimCLR ResNet-50 {t['size']} px, batch {t['batch']}, {t['precision']}, channels-last: "
            f"full step {_fmt(t['full_step_images_per_s'], '.1f')} img/s, model-only "
            f"{_fmt(t.get('model_only_images_per_s'), '.1f')} img/s, ratio {_fmt(t['ratio'], '.3f')}"
            + (f" ({err[:120]})" if err else "")
        )
        sh = t.get("shards") or {}
        if sh:
            err = sh.get("error") or (sh.get("full_step") or {}).get("error")
            lines.append(
                f"throughput from shards ({sh.get('images')} JPEGs of {sh.get('image_size')}, "
                f"{sh.get('num_workers')} workers): full step {_fmt(sh.get('full_step_images_per_s'), '.1f')} img/s, "
                f"ratio to model-only {_fmt(sh.get('ratio'), '.3f')} (goal {sh.get('goal_ratio')})"
                + (f" ({err[:120]})" if err else "")
            )
    s = report.get("sprint")
    if s:
        if "error" in s:
            lines.append(f"sprint {s['preset']}: FAIL {s['error'][:150]}")
        else:
            lines.append(
                f"sprint {s['preset']}: {s['epochs_done']} of {s['epochs']} epochs (fitted {s['fitted_epochs']}, "
                f"preset {s['preset_epochs']}) on {s['train_images']} images in {s['train_s']} s (estimated "
                f"{_fmt(s['estimated_train_s'], '.0f')} s{', stopped by the timer' if s['stopped_early'] else ''}), "
                f"loss {s['final_loss']:.4f}, kNN top-1 {s['knn_top1']:.4f} (k={KNN_K}, T={KNN_T}, "
                f"{s['knn']['bank']} bank, {s['knn']['queries']} queries)"
            )
    lines.append(
        f"{len(report['failures'])} failure(s){': ' + ', '.join(report['failures']) if report['failures'] else ''}; "
        f"items complete: {report['items_complete']}; {report['wall_s']} s; report {report['path']}"
    )
    return lines


def environment(device) -> dict:
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or 'cpu'})",
        "capability": list(torch.cuda.get_device_capability(device)) if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git": git_sha(),
    }


def finish(report: dict, t_start: float) -> None:
    items = report["items"]
    report["failures"] = [r["name"] for r in items if not r.get("skipped") and not r["ok"]]
    for phase in ("throughput", "sprint"):
        if report.get(phase) is not None and not report[phase]["ok"]:
            report["failures"].append(phase)
    ran = {r["name"] for r in items if not r.get("skipped")}
    report["items_complete"] = set(report["expected_items"]) <= ran
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    tmp = Path(report["path"]).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    os.replace(tmp, report["path"])


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json")
    p.add_argument("--minutes", type=float, help="wall-clock budget of the whole check (default 8; smoke 1)")
    p.add_argument("--smoke", action="store_true", help="every phase on the CPU, tiny sizes, 1-2 steps each")
    p.add_argument("--data", help="ImageFolder CIFAR-10 with train/ and test/ (default: the shared archive)")
    p.add_argument("--steps", type=int, help="steps per item (default 30; smoke 2)")
    p.add_argument("--warmup", type=int, help="steps left out of the timing (default 10; smoke 1)")
    p.add_argument("--log-every", type=int, help="steps between metric read-backs (default 5; smoke 1)")
    p.add_argument("--max-batch", type=int, help="batch cap of the items (default 512; smoke 8)")
    p.add_argument("--size", type=int, help="largest view of the CIFAR presets (default: the preset's; smoke 16)")
    p.add_argument("--vit-size", type=int, help="largest view of the ViT presets (default 96; smoke 32)")
    p.add_argument("--vit-depth", type=int, help="blocks of the ViT presets (default: theirs; smoke 2)")
    p.add_argument("--r50-size", type=int, help="ResNet-50 throughput view size (default 224; smoke 32)")
    p.add_argument("--r50-batch", type=int, help="ResNet-50 throughput batch (default 256; smoke 4)")
    p.add_argument("--resnet-width", type=int, help="backbone.width of the ResNets (default: theirs; smoke 8)")
    p.add_argument("--max-out-dim", type=int, help="cap on method.out_dim (default: none; smoke 4096)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], help="train.precision (default bf16; smoke auto)")
    p.add_argument("--compile-backend", help="torch.compile backend (default inductor; smoke eager)")
    p.add_argument("--sprint-epochs", type=int, help="sprint epochs (default: fitted to the time left; smoke 1)")
    p.add_argument("--items", default="", help="only the items whose name matches this regular expression")
    p.add_argument("--phases", default="items,throughput,sprint", help="comma-separated subset of the phases")
    args = p.parse_args(argv)
    defaults = dict(
        minutes=(5.0, 8.0),
        steps=(2, 30),
        warmup=(1, 10),
        log_every=(1, 5),
        max_batch=(8, 512),
        size=(16, 0),
        vit_size=(32, 96),
        vit_depth=(2, 0),
        r50_size=(32, 224),
        r50_batch=(4, 256),
        resnet_width=(8, 0),
        max_out_dim=(4096, 0),
        precision=("auto", "bf16"),
        compile_backend=("eager", "inductor"),
        sprint_epochs=(1, 0),
    )
    for key, (smoke, gpu) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, smoke if args.smoke else gpu)
    if args.warmup >= args.steps:
        p.error("--warmup must be smaller than --steps")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    t_end = t_start + args.minutes * 60
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; --smoke runs the same paths on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu") if args.smoke else torch.device("cuda", torch.cuda.current_device())
    if args.smoke:
        torch.set_num_threads(1)  # tiny tensors: a thread pool costs more than it gives, worse on a busy machine
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    phases = [s.strip() for s in args.phases.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = Path(tmp)
        if args.smoke:
            os.environ.setdefault("SELFSUP_CACHE", str(work / "cache"))  # the decoded images: nothing left behind
        data = prepare_data(args, work)
        t0 = time.perf_counter()  # decode the training images once (the cache every run then reads)
        selfsup.pretrain_dataset(load_config(SPRINT, common_overrides(SPRINT, args, data, device)).data)
        data["decode_s"] = round(time.perf_counter() - t0, 1)
        plan = item_plan(args, data, device) if "items" in phases else []
        plan = [p for p in plan if re.search(args.items, p[0])]
        report: dict[str, Any] = {
            "smoke": args.smoke,
            "minutes": args.minutes,
            "path": str(out / "gpu_check.json"),
            "argv": sys.argv[1:] if argv is None else argv,
            "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
            "environment": environment(device),
            "data": data,
            "methods": METHODS.names(),
            "expected_items": [name for name, _, _ in plan],
            "items": [],
            "compile": None,
            "throughput": None,
            "sprint": None,
        }
        finish(report, t_start)
        for name, preset, overrides in plan:
            if time.monotonic() > t_start + ITEMS_END * args.minutes * 60:
                r = {"name": name, "preset": preset, "ok": False, "skipped": "items phase past its time budget"}
            else:
                r = run_item(name, preset, overrides, args, device, work, args.compile_backend)
            report["items"].append(r)
            print(item_line(r), flush=True)
            finish(report, t_start)
        by_name = {r["name"]: r for r in report["items"]}
        eager, compiled = by_name.get("simclr-cifar10"), by_name.get("simclr-cifar10+compile")
        if eager and compiled:
            e, c = eager.get("steps_per_s"), compiled.get("steps_per_s")
            report["compile"] = {
                "preset": "simclr-cifar10",
                "backend": args.compile_backend,
                "eager_steps_per_s": e,
                "compiled_steps_per_s": c,
                "speedup": round(c / e, 3) if e and c else None,
                "compiled_item_seconds": compiled["seconds"],
            }
        if "throughput" in phases and time.monotonic() > t_start + THROUGHPUT_END * args.minutes * 60:
            report["throughput"] = {"ok": False, "skipped": "started past its time budget"}
        elif "throughput" in phases:
            report["throughput"] = throughput(args, data, device, work)
        finish(report, t_start)
        if "sprint" in phases:
            report["sprint"] = sprint(args, data, device, work, t_end)
        finish(report, t_start)
    print("\n".join(summary(report)), flush=True)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
