"""An independent MoCo v1 next to selfsup's, on the CPU protocol: same data, views, budget and kNN.

    python benchmarks/moco_reference.py               # 6 epochs, as the protocol's default budget
    python benchmarks/moco_reference.py --epochs 20

The reference follows the structure of the official CIFAR-10 demo (facebookresearch/moco,
``colab/moco_cifar10_demo.ipynb``): a torchvision ResNet-18 whose ``fc`` is the 128-d head, BatchNorm
split in 8 parts emulating 8 GPUs, the key encoder's momentum update at the start of each step, the
key batch shuffled and un-shuffled, InfoNCE against a queue of 4,096 keys (temperature 0.1, momentum
0.99), SGD lr 0.03 x bs/256, wd 5e-4, cosine per epoch. It shares with selfsup only the protocol's
data (the same 10,000 images and the batched views) and the kNN evaluation, so the two loss curves
and accuracies say whether a slow start is MoCo's or selfsup's. Prints one JSON line per
implementation, then their losses every 20 steps side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from protocol import BACKBONES, COMMON, cifar_root, run_method
from torch import nn

import selfsup
from selfsup import knn_eval
from selfsup.app.runs import image_dataset
from selfsup.config import load_config
from selfsup.data.batched import BatchedViews
from selfsup.train.logging import read_metrics


class SplitBatchNorm(nn.BatchNorm2d):
    """The demo's SplitBatchNorm: training statistics per ``num_splits`` interleaved parts."""

    def __init__(self, num_features: int, num_splits: int) -> None:
        super().__init__(num_features)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if not self.training:
            return super().forward(x)
        s = self.num_splits
        mean, var = self.running_mean.repeat(s), self.running_var.repeat(s)
        weight, bias = self.weight.repeat(s), self.bias.repeat(s)
        xs = x.reshape(-1, c * s, h, w)
        out = F.batch_norm(xs, mean, var, weight, bias, True, self.momentum, self.eps).reshape(n, c, h, w)
        self.running_mean.copy_(mean.view(s, c).mean(0))
        self.running_var.copy_(var.view(s, c).mean(0))
        return out


def reference(root: Path, epochs: int, seed: int = 0) -> tuple[dict, list[float]]:
    torch.manual_seed(seed)
    # the earlier protocol's backbone, which the demo's torchvision ResNet-18 below is
    overrides = [*COMMON, *BACKBONES["imagenet-stem"], f"train.epochs={epochs}"]
    cfg = load_config("mocov1-cifar10", [f"data.path={root / 'train'}", *overrides])
    ds = selfsup.pretrain_dataset(cfg.data)
    images = torch.from_numpy(np.asarray(ds.source.images)[np.asarray(ds.indices)]).permute(0, 3, 1, 2).contiguous()
    views = BatchedViews(cfg.data.views, cfg.data.mean, cfg.data.std)
    K, m, T, bs = 4096, 0.99, 0.1, cfg.train.batch_size

    def encoder() -> nn.Module:
        return torchvision.models.resnet18(num_classes=128, norm_layer=lambda c: SplitBatchNorm(c, 8))

    q_enc, k_enc = encoder(), encoder()
    for pq, pk in zip(q_enc.parameters(), k_enc.parameters()):
        pk.data.copy_(pq.data)
        pk.requires_grad = False
    queue = F.normalize(torch.randn(128, K), dim=0)
    ptr = 0
    lr = 0.03 * bs / 256
    opt = torch.optim.SGD(q_enc.parameters(), lr=lr, weight_decay=5e-4, momentum=0.9)
    steps = len(images) // bs
    g = torch.Generator().manual_seed(seed)
    losses, step, t0 = [], 0, time.perf_counter()
    for epoch in range(epochs):
        q_enc.train()
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        perm = torch.randperm(len(images), generator=g)
        for i in range(steps):
            x1, x2 = views(images[perm[i * bs : (i + 1) * bs]], seed=step)
            with torch.no_grad():
                for pq, pk in zip(q_enc.parameters(), k_enc.parameters()):
                    pk.data.mul_(m).add_(pq.data, alpha=1 - m)
            q = F.normalize(q_enc(x1), dim=1)
            with torch.no_grad():
                idx = torch.randperm(bs)
                k = F.normalize(k_enc(x2[idx]), dim=1)[torch.argsort(idx)]
            logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], dim=1) / T
            loss = F.cross_entropy(logits, torch.zeros(bs, dtype=torch.long))
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                queue[:, ptr : ptr + bs] = k.T
                ptr = (ptr + bs) % K
            losses.append(loss.item())
            step += 1
    train_s = time.perf_counter() - t0
    d, size = cfg.data, cfg.data.views[0].size
    bank = image_dataset(str(root / "train"), size, d.limit, d.mean, d.std)
    test = image_dataset(str(root / "test"), size, 2000, d.mean, d.std)
    q_enc.fc = nn.Identity()
    top1 = knn_eval(q_enc.eval(), bank, test, 200, 0.1)["top1"]
    figures = {"implementation": "reference", "epochs": epochs, "top1": round(top1, 4)}
    return {**figures, "train_seconds": round(train_s, 1)}, losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--data", help="ImageFolder CIFAR-10 root (default: the shared archive)")
    args = p.parse_args()
    root = cifar_root(args.data)
    ref, ref_losses = reference(root, args.epochs)
    print(json.dumps(ref), flush=True)
    protocol_args = argparse.Namespace(
        num_workers=0,
        backbone="imagenet-stem",
        extra=[f"train.epochs={args.epochs}", "train.log_every=1"],
        test_limit=2000,
        linear=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        (ours,) = run_method("mocov1", root, protocol_args, ["selfsup"], [0], Path(tmp))
        our_losses = [r["loss"] for r in read_metrics(Path(tmp) / "mocov1" / "selfsup-seed0") if "loss" in r]
    print(json.dumps({"implementation": "selfsup", **ours}), flush=True)
    curve = {s: [round(ref_losses[s], 3), round(our_losses[s], 3)] for s in range(0, len(ref_losses), 20)}
    print(json.dumps({"loss_every_20_steps (reference, selfsup)": curve}), flush=True)


if __name__ == "__main__":
    main()
