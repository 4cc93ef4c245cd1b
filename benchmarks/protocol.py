"""CPU quality protocol on real CIFAR-10: selfsup and lightly side by side, against random init.

    python benchmarks/protocol.py --method simclr            # uses ../shared/data/cifar10-jpeg.tar.gz
    python benchmarks/protocol.py --method all               # every registered method
    python benchmarks/protocol.py --method byol --impl selfsup --seeds 0   # one row, one seed
    python benchmarks/protocol.py --method simclr --backbone imagenet-stem # the earlier backbone
    python benchmarks/protocol.py --method simclr --data ~/cifar10   # any ImageFolder CIFAR-10 (train/, test/)

For each method and seed (``--seeds``, default 0,1) it pretrains on a fixed 10,000-image subset of the
CIFAR-10 train split (the same subset for every seed; the seed sets initialisation, views and order),
then runs a weighted kNN (k=200, T=0.1) with those 10,000 images as the bank and the 10,000 test
images as queries (``--test-limit 0``: all; standard error 0.46-0.49 points at 30-40% top-1). The same
backbone at random initialisation (same seed) is measured in the same run.

``--impl selfsup,lightly`` (the default) trains, for each method lightly implements (SimCLR, MoCo v2,
BYOL, SimSiam, Barlow Twins, SwAV, DINO, iBOT, DINOv2, VICReg, NNCLR, DCL, DCLW, TiCo, MMCR: the ``LIGHTLY``
table of ``lightly_methods.py``), lightly's own heads and losses
(``lightly_methods.py``) through selfsup's training loop on the same backbone (same initial
weights), data, views (and, for iBOT and DINOv2, masks), optimizer, schedule, batch and epochs: only the
method's heads, loss and EMA bookkeeping differ between the two rows.

Backbone (``--backbone``): ``cifar-w16``, ResNet-18 with the CIFAR stem (3x3/1, no max-pool) at base
width 16, the default; ``imagenet-stem``, the full-width ResNet-18 with the ImageNet stem (7x7/2 +
max-pool), the backbone of the earlier protocol, whose last stage sees a 1x1 map at 32 px. See
PROTOCOL.md for why and for what was measured.

Per-method settings, each method's explicit epoch budget (each run about 15 minutes or less on 2
cores) included, are in ``PROTOCOL``; everything else comes from the method's ``-cifar10`` preset.
A registered method not in ``PROTOCOL`` runs on its ``-cifar10`` preset with an epoch budget
estimated from its views (``budget_epochs``). Views are augmented in batches (``data.augment=batched``)
from images decoded once. ``--set KEY=VALUE`` overrides come last (``--set train.epochs=1`` for a smoke run).

Output: one JSON line per (method, impl, seed) run, then one summary line per method with
``selfsup_top1``, ``lightly_top1`` and ``random_init_top1`` (means over seeds, per-seed figures
alongside), ``lift`` (selfsup minus random init), ``minutes`` per run, the standard error ``se`` =
sqrt(p (1 - p) / n_test) and ``selfsup_ge_lightly_minus_se``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import selfsup
from selfsup import build_from_config, knn_eval
from selfsup.app.runs import image_dataset
from selfsup.config import load_config
from selfsup.data.archive import ensure_extracted
from selfsup.eval import linear_probe
from selfsup.methods import METHODS

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # lightly_methods, next to this file

TRAIN_IMAGES = 10_000
COMMON = [
    # the protocol backbone: ResNet-18, CIFAR stem, base width 16 (0.70 M parameters, 128-d features)
    "backbone.name=resnet18",
    "backbone.cifar_stem=true",
    "backbone.width=16",
    f"data.limit={TRAIN_IMAGES}",
    "data.limit_seed=0",
    "data.augment=batched",
    "train.batch_size=256",
    "train.log_every=10",
]
#: --backbone: overrides applied after COMMON (before the per-method ones)
BACKBONES: dict[str, list[str]] = {
    "cifar-w16": [],
    # the earlier protocol's backbone: full width, 7x7/2 stem + max-pool (a 1x1 map in the last stage)
    "imagenet-stem": ["backbone.cifar_stem=false", "backbone.width=0"],
}

#: Budget arithmetic. Calibration (protocol-calibration.md, 2 cores, uncontended): the protocol
#: backbone runs forward + backward at about 611 32-px view-images per second (model only, batch 256,
#: channels-last), and selfsup's SimCLR loop (augmentation, heads, loss, optimizer) at about 440
#: (5,000 images x 2 views x 4 and 12 epochs in about 100 and 250 s): VIEW_RATE. A 16-px multi-crop
#: view costs (16/32)^2 = 1/4 of one; a forward-only pass (EMA target, MoCo's key) about 1/3. Runs at
#: batch 64 are taken to be 25% slower per image (smaller GEMMs): an assumption, not a measurement.
#: Wide heads add their own cost (noted per method below, not in ``view_cost``). Training gets
#: TRAIN_BUDGET_S of the 15 minutes; the two kNN evaluations (random init and trained: 2 x 20,000
#: forward passes) and start-up take the rest.
#: Measured once on this backbone (PROTOCOL.md): 1 epoch of SimCLR on 10,000 images took 138 s
#: (72.8 images/s, 146 view-images/s) and the two kNN evaluations 130 s, with other jobs on the
#: machine (load average 1.1 -> 2.8); if that is the norm, scale the epochs below by about 1/3.
VIEW_RATE = 440.0
TRAIN_BUDGET_S = 12 * 60
BATCH64_SLOWDOWN = 1.25

WARMUP = "optim.warmup_epochs=1"
#: the colour jitter of dino-cifar10's views (solo-learn's CIFAR one: strength 0.5, hue 0.1)
_DINO_VIEW = load_config("dino-cifar10").data.views[0]
DINO_JITTER = {k: getattr(_DINO_VIEW, k) for k in ("brightness", "contrast", "saturation", "hue")}

#: method -> (preset, overrides). Every entry sets its epochs explicitly; the comment is the estimate
#: of the time per epoch: c view-image equivalents per image x 10,000 / VIEW_RATE = 22.7 c s per epoch.
#: Measured, the loop runs at about a third of VIEW_RATE on this backbone (SimCLR: 117 images/s, 86 s
#: an epoch, with other work on the machine), so each entry has about a third of the epochs the
#: estimate gives for TRAIN_BUDGET_S: a run takes 4-9 minutes with its two kNN evaluations (the
#: README's table has the measured minutes).
#: The other overrides are the ones the earlier (ImageNet-stem) protocol chose, with the figures that
#: chose them in PROTOCOL.md; they are kept until measured otherwise on this backbone.
PROTOCOL: dict[str, tuple[str, list[str]]] = {
    # c = 2 (two views; the 128-wide head is negligible): 45 s/epoch
    "simclr": ("simclr-cifar10", [WARMUP, "method.temperature=0.2", "train.epochs=5"]),
    # c = 2 + 2/3 (momentum encoder, forward-only on both views): 61 s/epoch
    "simclrv2": ("simclrv2-cifar10", [WARMUP, "method.temperature=0.2", "train.epochs=4"]),
    # c = 1 + 1/3 (query forward + backward, key forward-only), but both views are augmented, which
    # the rate does not separate: about 30-35 s/epoch. MoCo sits at the chance
    # loss for its first few hundred steps (PROTOCOL.md): it gets the most epochs.
    "mocov1": ("mocov1-cifar10", ["train.epochs=7"]),
    "mocov2": ("mocov2-cifar10", ["train.epochs=7"]),
    # c = 2 + 2/3 (momentum encoder on both views; 4096-wide heads ~ +10%): 67 s/epoch
    "mocov3": ("mocov3-cifar10", [WARMUP, "train.epochs=3"]),
    # c = 2 + 2/3 (target on both views; 4096-wide heads ~ +10%): 67 s/epoch.
    # The preset's clipped LARS (solo-learn's clip_lr) at a quarter of its lr and 4x its weight decay:
    # selfsup's loss is the official one (2 - 2 cos, summed over both directions), 4x lightly's
    # (mean -cos, averaged over them), so at the preset's lr 1.0 the BN and bias parameters (not
    # LARS-adapted) take 4x lightly's step, too large for 3 epochs (PROTOCOL.md: 0.2975 at lr 1.0,
    # 0.3256 here, on seed 0). Both implementations run at these values.
    "byol": ("byol-cifar10", [WARMUP, "optim.lr=0.25", "optim.weight_decay=4e-5", "train.epochs=3"]),
    # batch 64 (4x the steps), solo-learn's CIFAR lr 0.5 x bs/256 and wd 1e-5. c = 2 x 1.25 (batch 64)
    # x 1.2 (2048-wide projector and predictor): 68 s/epoch
    "simsiam": (
        "simsiam-cifar10",
        ["train.batch_size=64", "optim.lr=0.5", "optim.weight_decay=1e-5", "train.epochs=3"],
    ),
    # unclipped LARS (the preset's clipped steps are too large for a 1-epoch warm-up). c = 2 x 1.35
    # (2048-wide 3-layer projector and the 2048 x 2048 cross-correlation): 61 s/epoch
    "barlowtwins": ("barlowtwins-cifar10", [WARMUP, "optim.lars_clip=false", "train.epochs=4"]),
    # batch 64 (4x the steps), DINO's CIFAR jitter (0.4, 0.4, 0.2, 0.1) instead of the preset's strength
    # 0.8 and Sinkhorn epsilon 0.025 (PROTOCOL.md: with strong jitter two views of an image score the
    # prototypes almost as alike as two images, and the codes stay near uniform). The preset is now
    # solo-learn's two 32-px crops (no multi-crop), so the earlier local-crop scale override is gone.
    # c = 2 x 1.25 (the 2048-wide projector and 3,000 prototypes ~ +5%): 60 s/epoch
    # (prototypes frozen for the preset's 2 epochs; the queue, from epoch 50, stays off)
    "swav": (
        "swav-cifar10",
        [
            WARMUP,
            "train.batch_size=64",
            "method.epsilon=0.025",
            *[f"data.views.{v}.{k}={x}" for v in (0, 1) for k, x in DINO_JITTER.items()],
            "train.epochs=4",
        ],
    ),
    # batch 64 (4x the steps); the preset now has solo-learn's CIFAR LARS (trust 0.02, capped) that the
    # earlier protocol set here, and two 32-px crops. c = (2 + 2/3 teacher) x 1.25 x 1.15 (2048-wide
    # head, 4,096 outputs): 87 s/epoch
    "dino": ("dino-cifar10", [WARMUP, "train.batch_size=64", "train.epochs=3"]),
    # c = 2 (SimCLR's two views and 128-wide head; only the loss differs): 45 s/epoch, SimCLR's 5 epochs.
    # The preset's temperature 0.1 (lightly's) and SGD (lightly's CIFAR-10 benchmark) are kept.
    "dcl": ("dcl-cifar10", [WARMUP, "train.epochs=5"]),
    "dclw": ("dclw-cifar10", [WARMUP, "train.epochs=5"]),
    # c = 1 + 1/3 (online network on view 1, momentum encoder forward-only on view 2; the 1024-wide head is
    # negligible), but both views are augmented, as MoCo: about 30-35 s/epoch, MoCo's 7 epochs
    "tico": ("tico-cifar10", [WARMUP, "train.epochs=7"]),
    # the preset's 40 views of 32 images cost 40 view-images per image: 4 views here, at batch 64 (4x the
    # Adam steps: the official batch is 32). c = 4 x 1.25 (batch 64; no momentum encoder in the CIFAR
    # setting): 114 s/epoch
    "mmcr": ("mmcr-cifar10", [WARMUP, "train.batch_size=64", "data.views.0.count=4", "train.epochs=2"]),
    # c = 2 x 1.35 (2048-wide 3-layer expander and two 2048 x 2048 covariances, as Barlow Twins): 61 s/epoch,
    # Barlow Twins' 4 epochs. Unclipped LARS as Barlow Twins: the preset is solo-learn's same clipped LARS
    # (lr 0.3, eta 0.02), whose steps were too large for a 1-epoch warm-up there (PROTOCOL.md: 0.1705 capped
    # against 0.327); not measured for VICReg.
    "vicreg": ("vicreg-cifar10", [WARMUP, "optim.lars_clip=false", "train.epochs=4"]),
    # c = 2 x 1.3 (2048-wide 3-layer projector, 4096-wide predictor; the neighbour search over 4,096 rows is
    # negligible): 59 s/epoch. The support set at 4,096 (the preset's solo-learn 65,536 is 6.5x the 10,000
    # images and would not fill in a 4-epoch run: most neighbours would stay random vectors): full after 16
    # of the 39 steps of an epoch, each entry at most 16 steps old (lightly's example and MoCo's CIFAR size).
    "nnclr": ("nnclr-cifar10", [WARMUP, "method.queue_size=4096", "train.epochs=4"]),
    # MAE needs a ViT: its own backbone here, whatever --backbone says (cifar_stem and width undo COMMON's
    # ResNet keys). A 6-block ViT-Tiny/4 (192 wide, 3 heads, 64 patches at 32 px, 16 of them seen in
    # training) and a 128-wide 2-block decoder (4 heads) instead of the preset's ViT-S and 512 x 8 decoder
    # (paper Table 1a/b: narrower and shallower decoders cost a few linear-probe points). Measured on this
    # machine with one thread, under another benchmark: 95 training images/s (batch 256, model and AdamW
    # only) and 121 encoder forwards/s on whole images (the protocol ResNet: 697). Expected on 2 cores:
    # about 60-80 s per epoch and 3-4 minutes for the two kNN evaluations, so 4 epochs.
    "mae": (
        "mae-cifar10",
        [
            "backbone.name=vit_tiny_patch4",
            "backbone.cifar_stem=false",
            "backbone.width=0",
            "backbone.num_heads=0",
            "backbone.depth=6",
            "method.decoder_embed_dim=128",
            "method.decoder_depth=2",
            "method.decoder_num_heads=4",
            WARMUP,
            "train.epochs=4",
        ],
    ),
    # iBOT and DINOv2 need a ViT (their masks are patch masks): MAE's 192-wide ViT-Tiny/4, at 4 blocks. Each
    # image costs the student two 32-px global crops (65 tokens each, forward and backward) and, here, 2 of the
    # presets' 10 / 8 local 16-px crops (17 tokens), the teacher two forwards: measured on 2 cores, 15 s per
    # step of 256 at 6 blocks and 4 local crops, so about 9 s at 4 blocks and 2: 2 epochs, 15 minutes. Batch 64
    # as DINO's (4x the steps: at batch 256, 78 steps moved iBOT's teacher, momentum 0.996, 27% of the way to
    # the student, and iBOT stayed at random init's figure, 0.2725 against 0.2754). The heads at 512 hidden and
    # 4,096 outputs (the presets' 2048 and 8,192 / 65,536 would cost more than the backbone: the teacher's head
    # runs on every patch token). The last layer is not frozen (the presets freeze it for 1 and 2 of the 2
    # epochs); the temperatures stay in their warm-up (0.04).
    **{
        m: (
            f"{m}-cifar10",
            [
                "backbone.name=vit_tiny_patch4",
                "backbone.cifar_stem=false",
                "backbone.width=0",
                "backbone.num_heads=0",
                "backbone.depth=4",
                "method.hidden_dim=512",
                "method.out_dim=4096",
                "method.freeze_last_layer_epochs=0",
                "data.views.2.count=2",
                WARMUP,
                "train.batch_size=64",
                "train.epochs=2",
            ],
        )
        for m in ("ibot", "dinov2")
    },
}


def view_cost(cfg) -> float:
    """32-px view-image equivalents per image of one training step (see VIEW_RATE)."""
    largest = max(v.size for v in cfg.data.views)
    per_view = [(v.size / largest) ** 2 for v in cfg.data.views for _ in range(v.count)]
    if cfg.method.name in ("mocov1", "mocov2"):  # the query view back-propagates, the key view only forwards
        cost = per_view[0] + per_view[1] / 3
    else:
        cost = sum(per_view)
        if build_from_config(cfg).ema_pairs():  # a target network: forward-only on the global views
            cost += sum(per_view[:2]) / 3
    return cost * (BATCH64_SLOWDOWN if cfg.train.batch_size <= 64 else 1.0)


def estimated_train_s(cfg) -> float:
    return view_cost(cfg) * cfg.data.limit * cfg.train.epochs / VIEW_RATE


def budget_epochs(cfg) -> int:
    """Epochs that fit TRAIN_BUDGET_S for a method without a PROTOCOL entry."""
    return max(1, int(TRAIN_BUDGET_S * VIEW_RATE / (view_cost(cfg) * cfg.data.limit)))


def cifar_root(data: str | None) -> Path:
    if data:
        root = Path(data).expanduser()
    else:
        if not ARCHIVE.is_file():
            sys.exit(f"protocol: no --data given and {ARCHIVE} not found")
        root = ensure_extracted(ARCHIVE) / "cifar10"
    for split in ("train", "test"):
        if not (root / split).is_dir():
            sys.exit(f"protocol: {root / split} is not a directory (expected an ImageFolder CIFAR-10)")
    return root


def configure(method: str, root: Path, args, seed: int):
    """The run's config: COMMON, --backbone, PROTOCOL (or the preset with a budgeted epoch count), --set."""
    head = [f"data.path={root / 'train'}", f"data.num_workers={args.num_workers}", *COMMON, *BACKBONES[args.backbone]]
    tail = [f"train.seed={seed}", *args.extra]
    if method in PROTOCOL:
        preset, overrides = PROTOCOL[method]
        return load_config(preset, [*head, *overrides, *tail])
    preset = f"{method}-cifar10"
    cfg = load_config(preset, [*head, *tail])
    if not any(o.startswith("train.epochs=") for o in args.extra):
        cfg = load_config(preset, [*head, f"train.epochs={budget_epochs(cfg)}", *tail])
    return cfg


def backbone_info(cfg, encoder: torch.nn.Module) -> dict:
    b = cfg.backbone
    return {
        "name": b.name,
        "cifar_stem": b.cifar_stem,
        "width": getattr(b, "width", None),
        "features": getattr(encoder, "num_features", None),
        "params_m": round(sum(p.numel() for p in encoder.parameters()) / 1e6, 3),
    }


def train(impl: str, cfg, out: Path):
    """Pretrain ``cfg`` with selfsup's method (``selfsup.pretrain``, the library path) or lightly's
    (the same ``selfsup.fit`` call that ``pretrain`` makes, on a method object built here)."""
    if impl == "selfsup":
        return selfsup.pretrain(cfg, out)
    from lightly_methods import build_lightly

    dataset = selfsup.pretrain_dataset(cfg.data)
    dataset.check_readable()
    method = build_lightly(cfg)
    record = cfg.to_dict()
    return selfsup.fit(method, dataset, cfg.optim, cfg.train, out, record=record, num_workers=cfg.data.num_workers)


class Decoded(torch.utils.data.Dataset):
    """An evaluation set decoded and normalized once, shared by every kNN evaluation of the process
    (20,000 JPEG decodes per evaluation otherwise cost as much as the smaller networks' forward)."""

    def __init__(self, ds) -> None:
        self.source, self.indices = ds.source, ds.indices
        self.items = [ds[i] for i in range(len(ds))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@functools.cache
def decoded_eval_set(path: str, size: int, limit: int, mean: tuple, std: tuple) -> Decoded:
    return Decoded(image_dataset(path, size, limit, mean, std))


def run_method(method: str, root: Path, args, impls: list[str], seeds: list[int], out_root: Path) -> list[dict]:
    from_lightly = _lightly_methods()
    impls = [i for i in impls if i == "selfsup" or method in from_lightly]
    if not impls:
        print(json.dumps({"method": method, "skipped": "lightly has no implementation of it"}), flush=True)
        return []
    k, t = 200, 0.1
    rows = []
    for seed in seeds:
        cfg = configure(method, root, args, seed)
        d, size = cfg.data, cfg.data.views[0].size
        bank = decoded_eval_set(str(root / "train"), size, d.limit, d.mean, d.std)
        test = decoded_eval_set(str(root / "test"), size, args.test_limit, d.mean, d.std)
        # bank: exactly the pretraining subset (same limit and seed)
        pre = selfsup.pretrain_dataset(cfg.data)
        assert [bank.source.name(i) for i in bank.indices] == [pre.source.name(i) for i in pre.indices]
        t0 = time.perf_counter()
        random_encoder = build_from_config(cfg).encoder
        random_init = knn_eval(random_encoder, bank, test, k, t, num_workers=args.num_workers)
        random_s = time.perf_counter() - t0
        random_linear = None
        if args.linear:
            random_linear = linear_probe(random_encoder, bank, test, len(bank.source.classes))["top1"]
        for impl in impls:
            out = out_root / method / f"{impl}-seed{seed}"
            t0 = time.perf_counter()
            res = train(impl, cfg, out)
            train_s = time.perf_counter() - t0
            encoder, _ = selfsup.load_encoder(out)
            trained = knn_eval(encoder, bank, test, k, t, num_workers=args.num_workers)
            row = {
                "method": method,
                "impl": impl,
                "seed": seed,
                "top1": round(trained["top1"], 4),
                "random_init_top1": round(random_init["top1"], 4),
                "top5": round(trained["top5"], 4),
            }
            if args.linear:
                row["linear_top1"] = round(linear_probe(encoder, bank, test, len(bank.source.classes))["top1"], 4)
                row["random_init_linear_top1"] = round(random_linear, 4)
            row.update(
                {
                    "train_seconds": round(train_s, 1),
                    # training + its kNN evaluation + the random-init evaluation: one run's wall time
                    "run_seconds": round(time.perf_counter() - t0 + random_s, 1),
                    "estimated_train_seconds": round(estimated_train_s(cfg), 1),
                    "images_per_s": round(res.images_per_s, 1),
                    "final_loss": round(res.loss, 4),
                    "epochs": cfg.train.epochs,
                    "steps": res.steps,
                    "batch_size": cfg.train.batch_size,
                    "train_images": len(bank),
                    "test_images": len(test),
                    "backbone": backbone_info(cfg, encoder),
                    "knn": {"k": k, "temperature": t},
                    "precision": cfg.train.precision,
                    "torch_threads": torch.get_num_threads(),
                }
            )
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _lightly_methods() -> set[str]:
    try:
        from lightly_methods import LIGHTLY
    except ImportError as e:  # lightly is a benchmark dependency (pip install -e .[bench])
        print(f"protocol: lightly is not importable ({e}); skipping its rows", file=sys.stderr)
        return set()
    return set(LIGHTLY)


def _mean(xs: list[float]) -> float | None:
    return round(statistics.fmean(xs), 4) if xs else None


def summarize(method: str, rows: list[dict], command: str) -> dict:
    by = {impl: [r for r in rows if r["impl"] == impl] for impl in ("selfsup", "lightly")}
    ours = [r["top1"] for r in by["selfsup"]]
    theirs = [r["top1"] for r in by["lightly"]]
    seen = {}
    for r in rows:
        seen[r["seed"]] = r["random_init_top1"]
    random_init = list(seen.values())
    n_test = rows[0]["test_images"]
    ref = _mean(theirs) if theirs else _mean(ours)
    se = math.sqrt(ref * (1 - ref) / n_test) if ref is not None else None
    s, li, r0 = _mean(ours), _mean(theirs), _mean(random_init)
    return {
        "summary": True,
        "method": method,
        "selfsup_top1": s,
        "lightly_top1": li,
        "random_init_top1": r0,
        "lift": None if s is None else round(s - r0, 4),
        "lightly_lift": None if li is None else round(li - r0, 4),
        "selfsup_minus_lightly": None if s is None or li is None else round(s - li, 4),
        "se": None if se is None else round(se, 4),
        "selfsup_ge_lightly_minus_se": None if s is None or li is None else bool(s >= li - se),
        "lift_ge_5_points": None if s is None else bool(s - r0 >= 0.05),
        "minutes": _mean([r["run_seconds"] / 60 for r in by["selfsup"]]),
        "lightly_minutes": _mean([r["run_seconds"] / 60 for r in by["lightly"]]),
        "per_seed": {
            "seeds": sorted(seen),
            "selfsup": ours,
            "lightly": theirs,
            "random_init": random_init,
        },
        "lightly_has_method": method in _lightly_methods(),
        "epochs": rows[0]["epochs"],
        "batch_size": rows[0]["batch_size"],
        "test_images": n_test,
        "command": command,
    }


def _command(method: str, argv: list[str]) -> str:
    """This run's command line for one method (what reproduces its summary row)."""
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--method":
            skip = True
        elif not a.startswith("--method="):
            rest.append(a)
    return shlex.join(["python", "benchmarks/protocol.py", "--method", method, *rest])


def all_methods() -> list[str]:
    """Every registered method: PROTOCOL's order first, then any other (on its -cifar10 preset)."""
    names = METHODS.names()
    return [m for m in PROTOCOL if m in names] + [m for m in names if m not in PROTOCOL]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="simclr", help="a method, a comma-separated list, or all")
    p.add_argument(
        "--impl", default="selfsup,lightly", help="selfsup, lightly or both (lightly: where it has the method)"
    )
    p.add_argument("--seeds", default="0,1", help="comma-separated train.seed values (default 0,1)")
    p.add_argument("--backbone", choices=sorted(BACKBONES), default="cifar-w16")
    p.add_argument("--data", help="ImageFolder CIFAR-10 root with train/ and test/ (default: the shared archive)")
    p.add_argument("--out", help="folder for the run directories, METHOD/IMPL-seedN (default: temporary)")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--test-limit", type=int, default=0, help="test images (0: all 10,000)")
    p.add_argument("--linear", action="store_true", help="also the fast linear probe, trained and random init")
    p.add_argument(
        "--set",
        dest="extra",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, applied last (several after one flag, or the flag repeated)",
    )
    args = p.parse_args()
    impls = [i.strip() for i in args.impl.split(",") if i.strip()]
    if bad := set(impls) - {"selfsup", "lightly"}:
        p.error(f"--impl: unknown {sorted(bad)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    root = cifar_root(args.data)
    methods = all_methods() if args.method == "all" else args.method.split(",")
    failed = []
    for method in methods:
        with tempfile.TemporaryDirectory() as tmp:
            out_root = Path(args.out) if args.out else Path(tmp)
            try:
                rows = run_method(method, root, args, impls, seeds, out_root)
            except Exception as e:  # noqa: BLE001 - a method that cannot run is reported, not dropped
                if args.method != "all":
                    raise
                failed.append(method)
                print(json.dumps({"method": method, "error": f"{type(e).__name__}: {e}"}), flush=True)
                continue
        if rows:
            print(json.dumps(summarize(method, rows, _command(method, sys.argv[1:]))), flush=True)
    if failed:
        sys.exit(f"protocol: failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
