"""Data-path throughput, side by side in one run: Pillow in workers vs batched views vs tar shards.

    python benchmarks/data_throughput.py                       # 2,000 JPEGs of about 500 x 375, batch 64
    python benchmarks/data_throughput.py --methods dino --batches 20 --steps 10
    python benchmarks/data_throughput.py --smoke               # tiny: what tests/test_data_throughput.py runs

The images are made at run time (never committed) from the two photographs that ship with
scikit-learn (``load_sample_images``: china.jpg, flower.jpg, 640 x 427): random crops, flips, small
colour shifts and rescales to sizes around 500 x 375 (mostly landscape, some portrait, the aspect
varied a little), saved by Pillow at quality 90 into an ImageFolder tree of a few classes under
``--work`` (default ``$SELFSUP_CACHE/bench-jpegs``), and packed once with ``write_shards`` next to
it. Both are reused when already there. (These photographs are smoother than ImageNet's: about 47 KB
a file against ImageNet's 110 KB, so JPEG decoding is somewhat cheaper here than there.)

The paths (``data.*`` settings; the same ``--workers`` DataLoader workers for all of them):

- ``pil``: ``augment=pil``, every view made per image by Pillow and torchvision in the workers
  (what lightly and solo-learn do without DALI);
- ``opencv``: ``augment=opencv``, every view made per image in the workers with OpenCV's kernels
  from the same random parameters (:mod:`selfsup.data.opencv_views`);
- ``shards``: the same folder as tar shards (``source=shards``), as shipped (``augment=auto``: on
  the CPU the ``opencv`` path, reading each sample by one seek in its shard);
- ``folder-batched``: ``augment=batched`` on the CPU, no cache: each view's crop cut per image in
  the workers against the whole image, the rest of the view done in batches in the main process
  (``BatchedViews(crop=False)``): what ``auto`` does on a GPU, here for comparison;
- ``shards-cuda`` (CUDA machines only): the shard path as shipped on a GPU (``auto``: batched
  there).

Per method (SimCLR's 2 x 224 views from ``simclr-imagenet``, DINO's 2 x 224 + 8 x 96 from
``dino-vits16-imagenet``) and path, two numbers:

- data path alone: ``rank_loader`` over an ``EpochSampler`` as the training loop iterates it, each
  batch moved to the device and given to ``dataset.batch_augment`` (None for ``pil``); views per
  second after a warm-up batch, median over ``--rounds`` (the paths alternate order round by
  round, so machine noise hits them alike). ``wait_s`` is the time spent blocked on the loader
  (workers: decode, crop, collate, IPC), ``augment_s`` the time in the main process (copy to the
  device and the batched augmentation);
- full training steps: ``selfsup.fit`` for ``--steps`` steps with a small model (``--backbone``,
  ``--width``), images per second from ``FitResult.images_per_s`` (start-up of the workers and the
  first step included, as a user sees them).

Ratios are to the ``pil`` path. The last line is JSON with ``machine``, ``images``, ``settings``,
``methods`` (per path: ``data_views_per_s``, ``train_images_per_s``, ...) and ``summary``
(``data_vs_pil``, ``train_vs_pil``, ``shards_ge_2x_pil``: whether the shard path's data views/s
is at least twice the Pillow path's for every method).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

PRESETS = {"simclr": "simclr-imagenet", "dino": "dino-vits16-imagenet"}
#: path -> (what it reads, data.augment, training device)
PATHS = {
    "pil": ("images", "pil", "cpu"),
    "opencv": ("images", "opencv", "cpu"),
    "shards": ("shards", "auto", "cpu"),
    "folder-batched": ("images", "batched", "cpu"),
    "shards-cuda": ("shards", "auto", "cuda"),
}
SMOKE = {
    "images": 64,
    "image_size": "160x120",
    "batch": 16,
    "batches": 2,
    "steps": 2,
    "size": 64,
    "rounds": 1,
    # one main-process thread: tiny ops are not worth a thread pool, and on busy cores OpenMP's
    # spinning threads would stretch the run several-fold
    "threads": 1,
}

# torchvision 0.29 deprecates its image decoders (for TorchCodec) with a warning on every call;
# forked DataLoader workers inherit the filter
warnings.filterwarnings("ignore", "The image decoding and encoding capabilities", DeprecationWarning)


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# the images: made once from scikit-learn's sample photographs, then packed into shards


def _one_jpeg(photo, rng, w: int, h: int):
    """A random crop of ``photo`` (H, W, 3) at about ``w x h`` (aspect varied, portrait 30% of the
    time), flipped half the time, each channel's gain shifted by up to 8%."""
    import numpy as np
    from PIL import Image

    if rng.random() < 0.3:
        w, h = h, w
    aspect = (w / h) * float(np.exp(rng.uniform(-0.1, 0.1)))
    long_side = max(w, h) * float(np.exp(rng.uniform(-0.15, 0.15)))
    tw, th = (
        (round(long_side), round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), round(long_side))
    )
    ph, pw = photo.shape[:2]
    area = ph * pw * rng.uniform(0.35, 1.0)
    cw = min(pw, round((area * aspect) ** 0.5))
    ch = min(ph, round(cw / aspect))
    cw = min(cw, round(ch * aspect))
    top, left = rng.integers(0, ph - ch + 1), rng.integers(0, pw - cw + 1)
    crop = photo[top : top + ch, left : left + cw].astype(np.float32)
    crop *= rng.uniform(0.92, 1.08, size=3)
    img = Image.fromarray(crop.clip(0, 255).astype(np.uint8)).resize((tw, th), Image.BICUBIC)
    return img.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img


def make_images(work: Path, n: int, size: str, classes: int = 4, seed: int = 0) -> dict:
    """``{"images": ImageFolder root, "shards": shard folder, ...}`` of ``n`` JPEGs of about ``size``
    (``WxH``) under ``work``, made and packed unless a complete set is already there."""
    import numpy as np
    from sklearn.datasets import load_sample_images

    from selfsup.data.shards import write_shards

    w, h = (int(v) for v in size.split("x"))
    root = work / f"n{n}-{w}x{h}-c{classes}-s{seed}"
    done = root / "complete.json"
    if done.is_file():
        return json.loads(done.read_text())
    if root.exists():
        shutil.rmtree(root)  # an interrupted run: start again
    t0 = time.perf_counter()
    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    images = root / "images"
    for c in range(classes):
        (images / f"class{c}").mkdir(parents=True)
    nbytes = 0
    for i in range(n):
        path = images / f"class{i % classes}" / f"{i:06d}.jpg"
        _one_jpeg(photos[i % len(photos)], rng, w, h).save(path, quality=90)
        nbytes += path.stat().st_size
    made_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_shards(images, root / "shards", progress=False)
    info = {
        "images": str(images),
        "shards": str(root / "shards"),
        "n": n,
        "size": size,
        "classes": classes,
        "mean_kb": round(nbytes / n / 1024, 1),
        "make_s": round(made_s, 1),
        "pack_s": round(time.perf_counter() - t0, 1),
    }
    done.write_text(json.dumps(info))
    return info


# ------------------------------------------------------------------------------------------------
# one method on one path


def _config(args, method: str, path: str, data: dict):
    from selfsup.config import load_config

    what, augment, device = PATHS[path]
    preset = load_config(PRESETS[method])
    big = max(v.size for v in preset.data.views)
    sizes = [f"data.views.{i}.size={round(v.size * args.size / big)}" for i, v in enumerate(preset.data.views)]
    return load_config(
        PRESETS[method],
        [
            f"data.source={'shards' if what == 'shards' else 'imagefolder'}",
            f"data.path={data[what]}",
            f"data.augment={augment}",
            "data.cache=false",
            f"data.num_workers={args.workers}",
            *_backbone_overrides(preset.backbone, args.backbone, args.width),
            f"train.batch_size={args.batch}",
            f"train.device={device}",
            "train.epochs=1",
            "train.progress=false",
            "optim.warmup_epochs=0",
            *(sizes if args.size else []),
            *args.set,
        ],
    )


def _backbone_overrides(preset, name: str, width: int) -> list[str]:
    """``backbone.*`` overrides for ``name`` in place of the preset's backbone: ``width`` where the
    builder takes one, and the preset's settings the builder does not take (DINO's ViT
    ``drop_path_rate`` on a ResNet) back to their defaults."""
    import dataclasses
    import inspect

    from selfsup.backbones import BACKBONES

    accepted = inspect.signature(BACKBONES.get(name)).parameters
    defaults = type(preset)()
    out = [f"backbone.name={name}"] + ([f"backbone.width={width}"] if "width" in accepted else [])
    for f in dataclasses.fields(preset):
        if f.name not in accepted and f.name != "name" and getattr(preset, f.name) != getattr(defaults, f.name):
            out.append(f"backbone.{f.name}={json.dumps(getattr(defaults, f.name))}")
    return out


def time_data(cfg, args) -> dict:
    """Views/s of the data path alone, as the training loop iterates it (after one warm-up batch)."""
    import torch

    from selfsup.data import EpochSampler, pretrain_dataset, sample_seed
    from selfsup.train.engine import rank_loader

    device = torch.device(cfg.train.device)
    dataset = pretrain_dataset(cfg.data)
    sampler = EpochSampler(len(dataset), args.batch, seed=cfg.train.seed)
    if sampler.steps_per_epoch < args.batches + 1:
        raise SystemExit(f"{len(dataset)} images give {sampler.steps_per_epoch} batches; --batches needs one more")
    augment = dataset.batch_augment
    loader = iter(rank_loader(dataset, sampler, args.batch, args.workers, device, cfg.train.seed))
    views_done, wait_s, augment_s, shapes = 0, 0.0, 0.0, None
    for i in range(args.batches + 1):
        t0 = time.perf_counter()
        batch = next(loader)
        t1 = time.perf_counter()
        views = [v.to(device, non_blocking=True) for v in batch["views"]]
        if augment is not None:
            views = augment(views, sample_seed(cfg.train.seed, 0, i))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t2 = time.perf_counter()
        if i == 0:  # warm-up: worker start-up and the first batch
            shapes = [list(v.shape) for v in views]
            start = t2
            continue
        views_done += sum(v.shape[0] for v in views)
        wait_s, augment_s = wait_s + t1 - t0, augment_s + t2 - t1
    elapsed = time.perf_counter() - start
    del loader  # shuts the workers down
    return {
        "views_per_s": views_done / elapsed,
        "wait_s": wait_s,
        "augment_s": augment_s,
        "elapsed_s": elapsed,
        "shapes": shapes,
    }


def time_train(cfg, args) -> dict:
    """Images/s of ``selfsup.fit`` for ``--steps`` steps on this path."""
    import selfsup

    dataset = selfsup.pretrain_dataset(cfg.data)
    method = selfsup.build_from_config(cfg)
    res = selfsup.fit(
        method, dataset, cfg.optim, cfg.train, None, num_workers=cfg.data.num_workers, max_steps=args.steps
    )
    return {"images_per_s": res.images_per_s}


# ------------------------------------------------------------------------------------------------


def machine() -> dict:
    import PIL
    import torch
    import torchvision

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    cuda = torch.cuda.is_available()
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda": cuda,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS") if k in os.environ},
    }


def _ratios(per_path: dict, key: str) -> dict:
    base = per_path.get("pil", {}).get(key)
    return {p: round(r[key] / base, 3) for p, r in per_path.items() if base and r.get(key)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", help="folder for the generated JPEGs and shards (default: $SELFSUP_CACHE/bench-jpegs)")
    p.add_argument("--images", type=int, default=2000, help="how many JPEGs to make")
    p.add_argument("--image-size", default="500x375", help="typical size WxH of the JPEGs (ImageNet-like)")
    p.add_argument("--methods", default="simclr,dino", help=f"comma-separated, of {', '.join(PRESETS)}")
    p.add_argument("--paths", default=",".join(PATHS), help="comma-separated; shards-cuda needs CUDA")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers, every path")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=10, help="batches timed per round (after one warm-up batch)")
    p.add_argument("--rounds", type=int, default=2, help="data-path rounds (median); training runs once per path")
    p.add_argument("--steps", type=int, default=8, help="training steps per path (0: skip training)")
    p.add_argument("--size", type=int, default=0, help="the largest view's size (others scaled alike; 0: preset's)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--width", type=int, default=16, help="ResNet base width (0: the architecture's own)")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the main process (0: torch's default)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: " + json.dumps(SMOKE))
    args = p.parse_args()
    if args.smoke:
        defaults = {a.dest: a.default for a in p._actions}
        for k, v in SMOKE.items():
            if getattr(args, k) == defaults[k]:  # explicit flags still win
                setattr(args, k, v)

    import torch

    from selfsup.data.archive import default_cache

    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()  # torch_threads: the main process's (DataLoader workers use one each)
    paths = [x for x in args.paths.split(",") if x]
    notes = []
    if "shards-cuda" in paths and not info["cuda"]:
        paths.remove("shards-cuda")
        notes.append("shards-cuda skipped: no CUDA device on this machine")
    methods = [m for m in args.methods.split(",") if m]
    work = Path(args.work) if args.work else default_cache() / "bench-jpegs"
    data = make_images(work, args.images, args.image_size)
    log(f"images: {json.dumps(data)}")

    results: dict[str, dict] = {}
    for method in methods:
        per_path: dict[str, dict] = {p: {"data": []} for p in paths}
        for r in range(args.rounds):
            for path in paths if r % 2 == 0 else paths[::-1]:
                rec = time_data(_config(args, method, path, data), args)
                per_path[path]["data"].append(rec)
                log(f"{method} {path} round {r}: {rec['views_per_s']:.1f} views/s")
        if args.steps:
            for path in paths:
                per_path[path]["train"] = time_train(_config(args, method, path, data), args)
                log(f"{method} {path} training: {per_path[path]['train']['images_per_s']:.2f} images/s")
        cfg = _config(args, method, paths[0], data)
        n_views = sum(v.count for v in cfg.data.views)
        out = {}
        for path, recs in per_path.items():
            vps = statistics.median(x["views_per_s"] for x in recs["data"])
            row = {
                "data_views_per_s": round(vps, 1),
                "data_images_per_s": round(vps / n_views, 2),
                "wait_s": round(statistics.median(x["wait_s"] for x in recs["data"]), 3),
                "augment_s": round(statistics.median(x["augment_s"] for x in recs["data"]), 3),
                "rounds_views_per_s": [round(x["views_per_s"], 1) for x in recs["data"]],
                "first_batch_shapes": recs["data"][0]["shapes"],
            }
            if "train" in recs:
                ips = recs["train"]["images_per_s"]
                row.update(train_images_per_s=round(ips, 2), train_views_per_s=round(ips * n_views, 1))
            out[path] = row
        results[method] = {
            "preset": PRESETS[method],
            "views": " + ".join(f"{v.count} x {v.size}" for v in cfg.data.views),
            "n_views": n_views,
            "paths": out,
        }

    data_vs_pil = {m: _ratios(r["paths"], "data_views_per_s") for m, r in results.items()}
    train_vs_pil = {m: _ratios(r["paths"], "train_images_per_s") for m, r in results.items()}
    by_method = {m: r["shards"] >= 2.0 for m, r in data_vs_pil.items() if "shards" in r}
    summary = {
        "data_vs_pil": data_vs_pil,
        "train_vs_pil": train_vs_pil,
        "shards_ge_2x_pil": all(by_method.values()) if by_method else None,
        "shards_ge_2x_pil_by_method": by_method,
    }
    settings = {
        "smoke": args.smoke,
        "workers": args.workers,
        "batch": args.batch,
        "batches": args.batches,
        "rounds": args.rounds,
        "steps": args.steps,
        "backbone": args.backbone,
        "width": args.width,
        "size": args.size or None,
        "set": args.set,
    }
    print(
        json.dumps(
            {
                "machine": info,
                "images": data,
                "settings": settings,
                "methods": results,
                "summary": summary,
                "notes": notes,
            }
        )
    )


if __name__ == "__main__":
    main()
