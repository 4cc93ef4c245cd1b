"""Training throughput, side by side in one run: selfsup's full step vs the model-only ceiling vs lightly.

    python benchmarks/throughput.py --method simclr --rounds 3           # CIFAR-10 JPEGs, ResNet-18, 32 px
    python benchmarks/throughput.py --method simclr --stem imagenet

Each variant runs in its own subprocess (so peak memory is its own), the variants alternate round by
round (so machine noise hits all of them alike), and the median images/s per variant is reported:

- ``selfsup``: the real training loop (``selfsup.fit``) on the CIFAR-10 JPEG folder, data loading and
  augmentation included, timed from its per-step metrics after warm-up steps;
- ``model_only``: the same method and optimizer on pre-made tensors of the same shapes (the ceiling);
- ``lightly``: lightly's reference loop for the method (its own transforms, dataset and DataLoader,
  the same torchvision backbone, batch, view count and augmentation strengths, the same optimizer).
  Needs ``pip install lightly`` (optional, benchmark-only); skipped with a note when absent.

Images/s counts images (each giving all its views). Peak memory is the peak resident set size of the
process tree (training process plus data workers), sampled every 50 ms. The last line is JSON with
``method``, ``images_per_s``, ``vs_model_only`` and ``vs_lightly``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


# ------------------------------------------------------------------------------------------------
# memory of a process tree (Linux /proc; 0 elsewhere)


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


class PeakMemory:
    def __init__(self) -> None:
        self.peak_kb = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            pids, todo = [], [me]
            while todo:
                p = todo.pop()
                pids.append(p)
                todo += _children(p)
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p) for p in pids))
            self._stop.wait(0.05)

    def __enter__(self) -> PeakMemory:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


# ------------------------------------------------------------------------------------------------
# the variants (each runs in a subprocess)


def _config(args):
    from selfsup.config import load_config

    return load_config(
        f"{args.method}-cifar10",
        [
            f"data.path={args.data}/train",
            # the batched path reads decoded uint8 images in-process: no worker processes needed
            f"data.num_workers={0 if args.augment == 'batched' else args.num_workers}",
            f"data.limit={(args.warmup + args.steps) * args.batch}",
            "backbone.name=resnet18",
            f"backbone.cifar_stem={'true' if args.stem == 'cifar' else 'false'}",
            f"train.batch_size={args.batch}",
            "train.epochs=1",
            "train.log_every=1",
            "train.progress=false",
            "optim.warmup_epochs=0",
            f"data.augment={args.augment}",
            f"train.precision={args.precision}",
            *[f"data.views.{i}.size={_scaled(args.method, i, args.size)}" for i in range(_n_specs(args.method))],
        ],
    )


def _n_specs(method: str) -> int:
    from selfsup.config import load_config

    return len(load_config(f"{method}-cifar10").data.views)


def _scaled(method: str, i: int, size: int) -> int:
    """View ``i``'s size with the largest view at ``size`` (multi-crop local views scale alike)."""
    from selfsup.config import load_config

    views = load_config(f"{method}-cifar10").data.views
    return round(views[i].size * size / max(v.size for v in views))


def variant_selfsup(args) -> float:
    import selfsup
    from selfsup import build_from_config
    from selfsup.train.logging import read_metrics

    cfg = _config(args)
    with tempfile.TemporaryDirectory() as tmp:
        selfsup.fit(
            build_from_config(cfg),
            selfsup.pretrain_dataset(cfg.data),
            cfg.optim,
            cfg.train,
            tmp,
            num_workers=cfg.data.num_workers,
        )
        recs = [r for r in read_metrics(tmp) if "images_per_s" in r and r["step"] > args.warmup]
    return len(recs) / sum(1.0 / r["images_per_s"] for r in recs)  # images per second over the timed steps


def _time_steps(step, warmup: int, steps: int, batch: int) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def model_only_step(cfg, batch: int, device):
    """One training step of ``cfg``'s method (forward, backward, optimizer, EMA) on random views already
    on ``device``, in the loop's memory format and precision: the model-only ceiling. Returns the loss."""
    import torch

    from selfsup import build_from_config
    from selfsup.data import expand_views
    from selfsup.methods.base import Progress
    from selfsup.nn.ema import ema_update
    from selfsup.precision import autocast
    from selfsup.train.optim import build_optimizer, scaled_lr

    method = build_from_config(cfg).to(device)
    views = [torch.randn(batch, 3, s.size, s.size, device=device) for s in expand_views(cfg.data.views)]
    if cfg.train.channels_last:  # the same memory format and precision as the training loop
        method.to(memory_format=torch.channels_last)
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    opt = build_optimizer(method.param_groups(), cfg.optim, scaled_lr(cfg.optim, batch), device)
    progress = Progress(0, 100, 10)

    def step() -> torch.Tensor:
        method.on_step(progress)
        with autocast(device, cfg.train.precision):
            out = method(views)
        out.loss.backward()
        method.after_backward(progress)
        opt.step()
        opt.zero_grad(set_to_none=True)
        for online, target in method.ema_pairs():
            ema_update(online, target, method.ema_momentum(progress), method.ema_buffers)
        return out.loss.detach()

    return step


def variant_model_only(args) -> float:
    from selfsup.dist import resolve_device

    cfg = _config(args)
    step = model_only_step(cfg, args.batch, resolve_device(cfg.train.device))
    return _time_steps(lambda: step().item(), args.warmup, args.steps, args.batch)


def _lightly_view_kwargs(v, data) -> dict:
    """lightly's colour-jitter and crop arguments for one of our view specs (same strengths)."""
    return dict(
        cj_prob=v.jitter_p,
        cj_strength=1.0,
        cj_bright=v.brightness,
        cj_contrast=v.contrast,
        cj_sat=v.saturation,
        cj_hue=v.hue,
        random_gray_scale=v.grayscale_p,
        hf_prob=v.hflip_p,
        normalize={"mean": list(data.mean), "std": list(data.std)},
    )


def _lightly_model(args, cfg, device):
    """(transform, loss_fn(views) -> loss, params, after_backward) of lightly's reference example."""
    import copy

    import torch
    import torchvision
    from torch import nn

    backbone = torchvision.models.resnet18()
    backbone.fc = nn.Identity()
    if args.stem == "cifar":
        backbone.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        backbone.maxpool = nn.Identity()
    backbone.to(device)
    views = cfg.data.views
    m = cfg.method
    if args.method == "simclr":
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        from lightly.transforms import SimCLRTransform

        v = views[0]
        kw = _lightly_view_kwargs(v, cfg.data)
        kw.update(cj_strength=v.brightness / 0.8)
        for k in ("cj_bright", "cj_contrast", "cj_sat", "cj_hue"):
            kw.pop(k)
        transform = SimCLRTransform(input_size=args.size, min_scale=v.scale[0], gaussian_blur=v.blur_p, **kw)
        head = SimCLRProjectionHead(512, 512, m.proj_out_dim).to(device)
        criterion = NTXentLoss(temperature=m.temperature)

        def loss_fn(x):
            return criterion(head(backbone(x[0])), head(backbone(x[1])))

        return transform, loss_fn, list(backbone.parameters()) + list(head.parameters()), lambda: None
    if args.method == "byol":
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad, update_momentum
        from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform

        v1, v2 = views
        transform = BYOLTransform(
            view_1_transform=BYOLView1Transform(
                input_size=args.size,
                min_scale=v1.scale[0],
                gaussian_blur=v1.blur_p,
                solarization_prob=v1.solarize_p,
                **_lightly_view_kwargs(v1, cfg.data),
            ),
            view_2_transform=BYOLView2Transform(
                input_size=args.size,
                min_scale=v2.scale[0],
                gaussian_blur=v2.blur_p,
                solarization_prob=v2.solarize_p,
                **_lightly_view_kwargs(v2, cfg.data),
            ),
        )
        proj = BYOLProjectionHead(512, m.proj_hidden_dim, m.proj_out_dim).to(device)
        pred = BYOLPredictionHead(m.proj_out_dim, m.pred_hidden_dim, m.proj_out_dim).to(device)
        t_backbone, t_proj = copy.deepcopy(backbone), copy.deepcopy(proj)
        deactivate_requires_grad(t_backbone)
        deactivate_requires_grad(t_proj)
        criterion = NegativeCosineSimilarity()

        def loss_fn(x):
            update_momentum(backbone, t_backbone, m=m.momentum)
            update_momentum(proj, t_proj, m=m.momentum)
            p0, p1 = pred(proj(backbone(x[0]))), pred(proj(backbone(x[1])))
            with torch.no_grad():
                z0, z1 = t_proj(t_backbone(x[0])), t_proj(t_backbone(x[1]))
            return 0.5 * (criterion(p0, z1) + criterion(p1, z0))

        params = list(backbone.parameters()) + list(proj.parameters()) + list(pred.parameters())
        return transform, loss_fn, params, lambda: None
    if args.method == "dino":
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead
        from lightly.models.utils import deactivate_requires_grad, update_momentum
        from lightly.transforms import DINOTransform

        g, local = views[0], views[-1]
        kw = _lightly_view_kwargs(g, cfg.data)
        transform = DINOTransform(
            global_crop_size=g.size,
            global_crop_scale=tuple(g.scale),
            local_crop_size=local.size,
            local_crop_scale=tuple(local.scale),
            n_local_views=local.count,
            gaussian_blur=(views[0].blur_p, views[1].blur_p, local.blur_p),
            solarization_prob=views[1].solarize_p,
            **kw,
        )
        head = DINOProjectionHead(
            512, m.hidden_dim, m.bottleneck_dim, m.out_dim, batch_norm=m.use_bn, freeze_last_layer=1
        ).to(device)
        t_backbone = copy.deepcopy(backbone)
        t_head = DINOProjectionHead(
            512,
            m.hidden_dim,
            m.bottleneck_dim,
            m.out_dim,
            batch_norm=m.use_bn,
        ).to(device)
        t_head.load_state_dict(head.state_dict())  # weight-normed: no deepcopy (as lightly's example)
        deactivate_requires_grad(t_backbone)
        deactivate_requires_grad(t_head)
        criterion = DINOLoss(
            output_dim=m.out_dim,
            warmup_teacher_temp=m.warmup_teacher_temp,
            teacher_temp=m.teacher_temp,
            warmup_teacher_temp_epochs=m.warmup_teacher_temp_epochs,
            student_temp=m.student_temp,
            center_momentum=m.center_momentum,
        ).to(device)

        def loss_fn(x):
            update_momentum(backbone, t_backbone, m=m.momentum)
            update_momentum(head, t_head, m=m.momentum)
            with torch.no_grad():
                teacher = [t_head(t_backbone(v)) for v in x[:2]]
            student = [head(backbone(v)) for v in x]
            return criterion(teacher, student, epoch=0)

        def after_backward():
            head.cancel_last_layer_gradients(current_epoch=0)

        return transform, loss_fn, list(backbone.parameters()) + list(head.parameters()), after_backward
    raise SystemExit(f"no lightly reference loop for {args.method}")


def variant_lightly(args) -> float:
    import torch
    import torchvision
    from lightly.utils.lars import LARS

    cfg = _config(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    transform, loss_fn, params, after_backward = _lightly_model(args, cfg, device)
    dataset = torchvision.datasets.ImageFolder(f"{args.data}/train", transform=transform)
    n = (args.warmup + args.steps + 1) * args.batch
    dataset = torch.utils.data.Subset(
        dataset, torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.num_workers
    )
    if cfg.optim.name == "lars":
        opt = LARS(params, lr=cfg.optim.lr * args.batch / 256, momentum=0.9, weight_decay=cfg.optim.weight_decay)
    else:
        opt = torch.optim.SGD(
            params, lr=cfg.optim.lr * args.batch / 256, momentum=0.9, weight_decay=cfg.optim.weight_decay
        )
    it = iter(loader)

    def step():
        views, _ = next(it)
        loss = loss_fn([v.to(device, non_blocking=True) for v in views])
        loss.backward()
        after_backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()

    return _time_steps(step, args.warmup, args.steps, args.batch)


VARIANTS = {"selfsup": variant_selfsup, "model_only": variant_model_only, "lightly": variant_lightly}


def run_variant(args) -> None:
    with PeakMemory() as mem:
        ips = VARIANTS[args.variant](args)
    print(json.dumps({"variant": args.variant, "images_per_s": ips, "peak_mb": mem.peak_kb / 1024}))


# ------------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="simclr")
    p.add_argument("--data", help="ImageFolder CIFAR-10 root (default: extract the shared archive)")
    p.add_argument("--stem", choices=["cifar", "imagenet"], default="cifar")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers (lightly; selfsup's pil path)")
    p.add_argument(
        "--augment", choices=["batched", "opencv", "pil"], default="batched", help="selfsup's augmentation path"
    )
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="selfsup's train.precision")
    p.add_argument("--variants", default="selfsup,model_only,lightly")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.data is None:
        from selfsup.data.archive import ensure_extracted

        args.data = str(ensure_extracted(ARCHIVE) / "cifar10")
    if args.variant:
        return run_variant(args)

    variants = args.variants.split(",")
    if "lightly" in variants:
        try:
            import lightly  # noqa: F401
        except ImportError:
            print("lightly is not installed (pip install lightly): skipping its reference loop", file=sys.stderr)
            variants.remove("lightly")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    base = [
        sys.executable,
        __file__,
        "--method",
        args.method,
        "--data",
        args.data,
        "--stem",
        args.stem,
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
        "--warmup",
        str(args.warmup),
        "--steps",
        str(args.steps),
        "--num-workers",
        str(args.num_workers),
        "--augment",
        args.augment,
        "--precision",
        args.precision,
    ]
    for r in range(args.rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            out = subprocess.run([*base, "--variant", v], capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"variant {v} failed:\n{out.stderr[-3000:]}")
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            results[v].append(rec)
            print(json.dumps({"round": r, **rec}), flush=True)
    med = {v: statistics.median(x["images_per_s"] for x in recs) for v, recs in results.items()}
    mem = {v: max(x["peak_mb"] for x in recs) for v, recs in results.items()}
    summary = {
        "method": args.method,
        "backbone": "resnet18",
        "stem": args.stem,
        "size": args.size,
        "batch": args.batch,
        "images_per_s": round(med["selfsup"], 1),
        "model_only_images_per_s": round(med["model_only"], 1) if "model_only" in med else None,
        "lightly_images_per_s": round(med["lightly"], 1) if "lightly" in med else None,
        "vs_model_only": round(med["selfsup"] / med["model_only"], 3) if "model_only" in med else None,
        "vs_lightly": round(med["selfsup"] / med["lightly"], 3) if "lightly" in med else None,
        "peak_mb": {v: round(m) for v, m in mem.items()},
        "precision": args.precision,
        "augment": args.augment,
        "rounds": args.rounds,
        "timed_steps": args.steps,
        "num_workers": args.num_workers,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
