"""The recipe table: for every preset, the values its paper or official code states, with the file.

Each row of ``RECIPES`` names its sources (repository, commit where it matters, path and line or
flag) and holds the recipe as dotted config keys (``optim.lr``, ``data.views.1.count``, ...), plus:

- ``effective_lr``: the peak learning rate the source states, compared with
  :func:`selfsup.train.optim.scaled_lr` (lr and its scaling rule at the preset's batch);
- ``exclude_bias_norm``: whether biases and norm parameters are kept out of weight decay and LARS
  adaptation in the source (compared with the method class's ``exclude_bias_norm``);
- ``deviations``: where a preset knowingly departs from its source, ``key: (value here, the source's
  value, why)``; the test pins the value here, so a departure is visible in this table.

A preset edit that departs from its recipe must change this table too, and a new preset needs a row.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from selfsup.config import list_presets, load_config
from selfsup.methods import METHODS
from selfsup.train.optim import scaled_lr

CIFAR_MEAN_STD = {"data.mean": (0.4914, 0.4822, 0.4465), "data.std": (0.2470, 0.2435, 0.2616)}  # solo-learn's cifar10
DEMO_MEAN_STD = {"data.mean": (0.4914, 0.4822, 0.4465), "data.std": (0.2023, 0.1994, 0.2010)}  # moco_cifar10_demo.ipynb
SIMCLR_JITTER = {"jitter_p": 0.8, "brightness": 0.8, "contrast": 0.8, "saturation": 0.8, "hue": 0.2, "grayscale_p": 0.2}
HALF_JITTER = {"jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1, "grayscale_p": 0.2}
BYOL_JITTER = {"jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1, "grayscale_p": 0.2}
#: MAE's one view: crop and flip only (facebookresearch/mae main_pretrain.py:123-127)
NO_COLOUR = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0, hflip_p=0.5, interpolation="bicubic")


#: iBOT's views (DINO's): BYOL's jitter, Pillow's untruncated blur
IBOT_VIEW = {**BYOL_JITTER, "blur_kernel_frac": 0.0}


def views(i: int, **kv: Any) -> dict[str, Any]:
    """``data.views.<i>.<key>`` entries."""
    return {f"data.views.{i}.{k}": v for k, v in kv.items()}


def asymmetric(size: int, scale=(0.08, 1.0), blur=(1.0, 0.1), interpolation="bicubic", **extra) -> dict[str, Any]:
    """BYOL's two views: blur p=blur[0] / blur[1], solarization 0 / 0.2."""
    common = dict(count=1, size=size, scale=scale, interpolation=interpolation, hflip_p=0.5, **BYOL_JITTER, **extra)
    return {
        **views(0, **common, blur_p=blur[0], solarize_p=0.0),
        **views(1, **common, blur_p=blur[1], solarize_p=0.2),
    }


SIMCLR_V1 = "google-research/simclr@85e8552 (the last SimCLR v1 code)"
SIMCLR_V2 = "google-research/simclr@383d414"
MOCO = "facebookresearch/moco@132aea9"
MOCO_DEMO = "facebookresearch/moco@f736491 colab/moco_cifar10_demo.ipynb (args cell, train_transform, optimizer)"
MOCOV3 = "facebookresearch/moco-v3@c349e6e"
SWAV = "facebookresearch/swav@06b1b7c"
SIMSIAM = "facebookresearch/simsiam@a7bc177"
BYOL = "deepmind/deepmind-research@d8df415"
BT = "facebookresearch/barlowtwins@8e8d284"
DINO = "facebookresearch/dino@7c446df"
SOLO = "vturrisi/solo-learn@9187ea3"
DKOBAK = "dkobak/simclr-cifar10@44b2500"
LIGHTLY = "lightly-ai/lightly@e8d317f"
LIGHTLY_CIFAR = f"{LIGHTLY} docs/source/getting_started/benchmarks/cifar10_benchmark.py"
MMCR = "ThomasYerxa/mmcr@fafd3a9"
DCL_REF = "raminnakhli/Decoupled-Contrastive-Learning@0b9b76d (unofficial)"
TICO_REF = "sayannag/TiCo-pytorch@2259b83 (unofficial)"
VICREG = "facebookresearch/vicreg@4e12602"
MAE = "facebookresearch/mae@efb2a80"
IBOT = "bytedance/ibot@da316d8"
DINOV2 = "facebookresearch/dinov2@b8931f7"
TIMM_032 = "huggingface/pytorch-image-models@6504a42 (timm 0.3.2, which MAE pins: main_pretrain.py:27)"
NNCLR_PAPER = (
    "arXiv:2104.14548 sec. 4 implementation details (no official code: vissl issue #316 is pointed to solo-learn; "
    "the paper's text was not in the reference store, so these are the values as briefed, the heads as "
    "lightly 1.6.0 quotes the paper in lightly/models/modules/heads.py:212-216 and :246-248)"
)
SOLO_COMMON = (
    f"{SOLO} solo/args/pretrain.py:152-154 (lr x batch/256), solo/methods/base.py:291-294 (warm-up 10 epochs "
    "from 3e-5, cosine to 0, per step), solo/utils/lars.py (exclude_bias_n_norm: no wd, no adaptation on 1-D), "
    "solo/data/pretrain_dataloader.py:207,224 (cifar10 mean/std, bicubic crops), solo backbones without "
    "zero_init_residual (backbone.kwargs {})"
)

RECIPES: dict[str, dict[str, Any]] = {
    # ------------------------------------------------------------------ SimCLR v1 / v2
    "simclr-imagenet": {
        "source": f"{SIMCLR_V1} README.md:60-66 (--train_batch_size=4096 --train_epochs=100 --learning_rate=0.3 "
        "--weight_decay=1e-6 --temperature=0.1); run.py flags (warmup_epochs 10, momentum 0.9, head_proj_dim 128, "
        "num_nlh_layers 1, color_jitter_strength 1.0, use_blur True); model_util.py:55 (lr x bs/256); "
        "resnet.py:324,389 (init_zero=True); lars_optimizer.py (eta 1e-3, BN and bias excluded)",
        "values": {
            "method.name": "simclr",
            "method.temperature": 0.1,
            "method.proj_layers": 2,
            "method.proj_hidden_dim": 0,  # the backbone's width
            "method.proj_out_dim": 128,
            "method.proj_last_bn": True,
            "backbone.name": "resnet50",
            "backbone.zero_init_residual": True,
            "optim.name": "lars",
            "optim.lr": 0.3,
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.trust_coefficient": 0.001,
            "optim.lars_clip": False,
            "optim.weight_decay": 1e-6,
            "optim.warmup_epochs": 10,
            "optim.warmup_start_lr": 0.0,
            "optim.schedule": "cosine",
            "optim.min_lr": 0.0,
            "train.batch_size": 4096,
            "train.epochs": 100,
            **views(
                0,
                count=2,
                size=224,
                scale=(0.08, 1.0),
                hflip_p=0.5,
                **SIMCLR_JITTER,
                blur_p=0.5,
                blur_sigma=(0.1, 2.0),
                solarize_p=0.0,
                interpolation="bicubic",
            ),
        },
        "effective_lr": 4.8,
        "exclude_bias_norm": True,
        "deviations": {
            "data.mean": ((0.485, 0.456, 0.406), None, "the official pipeline feeds [0, 1] pixels"),
        },
    },
    "simclr-cifar10": {
        "source": f"{SIMCLR_V1} README.md:39-44 (--train_batch_size=512 --train_epochs=1000 --learning_rate=1.0 "
        "--weight_decay=1e-6 --temperature=0.5 --resnet_depth=18 --use_blur=False --color_jitter_strength=0.5); "
        "run.py warmup_epochs 10; resnet.py:324 (init_zero=True), :473 (cifar_stem)",
        "values": {
            "method.temperature": 0.5,
            "method.proj_out_dim": 128,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "backbone.zero_init_residual": True,
            "optim.name": "lars",
            "optim.lr": 1.0,
            "optim.lr_scaling": "linear",
            "optim.weight_decay": 1e-6,
            "optim.warmup_epochs": 10,
            "optim.trust_coefficient": 0.001,
            "train.batch_size": 512,
            "train.epochs": 1000,
            **views(0, count=2, size=32, scale=(0.08, 1.0), **HALF_JITTER, blur_p=0.0, interpolation="bicubic"),
        },
        "effective_lr": 2.0,
        "exclude_bias_norm": True,
        "deviations": {
            "data.mean": (CIFAR_MEAN_STD["data.mean"], None, "the official pipeline feeds [0, 1] pixels"),
        },
    },
    "simclr-cifar10-sprint": {
        "source": f"{DKOBAK} README.md:31-37 (100 epochs, base lr 0.06, 83.2% kNN k=10 in 20 min on an A100); "
        "simclr-cifar10.py:22-31 (BATCH_SIZE 512, WEIGHT_DECAY 5e-4, MOMENTUM 0.9, PROJECTOR_HIDDEN_SIZE 1024, "
        "PROJECTOR_OUTPUT_SIZE 128, CROP_LOW_SCALE 0.2, GRAYSCALE_PROB 0.1), :46-56 (RandomResizedCrop(32) bilinear, "
        "flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, no blur, ToTensor only), :85-98 (torchvision resnet18, 3x3 "
        "stride-1 conv1, no max-pool; Linear-ReLU-Linear head), :106 (temperature 0.5), :116 (cross_entropy mean "
        "over the 2N anchors), :126-133 (SGD(model.parameters(), lr x bs/256), CosineAnnealingLR, no warm-up)",
        "values": {
            "method.name": "simclr",
            "method.temperature": 0.5,
            "method.proj_layers": 2,
            "method.proj_hidden_dim": 1024,
            "method.proj_out_dim": 128,
            "method.proj_last_bn": False,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "backbone.zero_init_residual": False,
            "optim.name": "sgd",
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.nesterov": False,
            "optim.warmup_epochs": 0,
            "optim.schedule": "cosine",
            "optim.min_lr": 0.0,
            "train.batch_size": 512,
            "train.epochs": 100,
            **views(
                0,
                count=2,
                size=32,
                scale=(0.2, 1.0),
                hflip_p=0.5,
                **{**HALF_JITTER, "grayscale_p": 0.1},
                blur_p=0.0,
                solarize_p=0.0,
                interpolation="bilinear",
            ),
        },
        "deviations": {
            "optim.lr": (0.03, 0.06, "selfsup's loss is loss_a + loss_b, twice the source's mean: half the lr"),
            "optim.weight_decay": (1e-3, 5e-4, "twice the wd at half the lr: exactly the source's SGD update"),
            "exclude_bias_norm": (True, False, "the source decays every parameter; SimCLR's method excludes 1-D ones"),
            "data.mean": (CIFAR_MEAN_STD["data.mean"], None, "the source feeds [0, 1] pixels (ToTensor only)"),
        },
    },
    "simclr-demo": {
        "source": "src/selfsup/configs/simclr-demo.yaml itself: the offline digits demo's own values, "
        "not a paper recipe",
        "values": {
            "method.name": "simclr",
            "method.temperature": 0.5,
            "backbone.name": "resnet10",
            "backbone.cifar_stem": False,
            "backbone.zero_init_residual": False,
            "data.source": "digits",
            "optim.name": "lars",
            "optim.lr": 1.0,
            "optim.weight_decay": 1e-4,
            "optim.warmup_epochs": 1,
            "train.batch_size": 256,
            "train.epochs": 15,
            **views(
                0,
                count=2,
                size=32,
                scale=(0.5, 1.0),
                hflip_p=0.0,
                grayscale_p=0.0,
                blur_p=0.0,
            ),
            "data.mean": (0.5, 0.5, 0.5),
            "data.std": (0.5, 0.5, 0.5),
        },
        "effective_lr": 1.0,
        "exclude_bias_norm": True,
    },
    "simclrv2-imagenet": {
        "source": "arXiv:2006.10029 sec. 4 'Settings' (paper: lr 6.4 = 0.1 x sqrt(bs), wd 1e-4, 800 epochs, 5% "
        f"warm-up, batch 4096, 3-layer head, memory 64K at EMA 0.999); {SIMCLR_V2} tf2/run.py "
        "(learning_rate_scaling sqrt, num_proj_layers 3, proj_out_dim 128), tf2/resnet.py:366,467 (init_zero=True), "
        "tf2/model.py:40-41 (BN and bias excluded)",
        "values": {
            "method.name": "simclrv2",
            "method.temperature": 0.1,
            "method.proj_layers": 3,
            "method.proj_out_dim": 128,
            "method.finetune_layer": 1,
            "method.momentum": 0.999,
            "backbone.name": "r50-1x-sk",
            "backbone.zero_init_residual": True,
            "optim.name": "lars",
            "optim.lr": 0.1,
            "optim.lr_scaling": "sqrt",
            "optim.weight_decay": 1e-4,
            "optim.warmup_epochs": 40,
            "train.batch_size": 4096,
            "train.epochs": 800,
            **views(0, count=2, size=224, **SIMCLR_JITTER, blur_p=0.5, interpolation="bicubic"),
        },
        "effective_lr": 6.4,
        "exclude_bias_norm": True,
        "deviations": {
            "method.queue_size": (65536, 0, "the paper's memory; the official tf2/ code has no queue"),
        },
    },
    "simclrv2-cifar10": {
        "source": f"{SIMCLR_V2} README.md:79-84 = tf2/README.md:61-66 (--train_batch_size=512 --train_epochs=1000 "
        "--learning_rate=1.0 --weight_decay=1e-4 --temperature=0.5 --resnet_depth=18 --use_blur=False "
        "--color_jitter_strength=0.5); tf2/run.py defaults (num_proj_layers 3, warmup_epochs 10); "
        "tf2/resnet.py:366,467",
        "values": {
            "method.name": "simclrv2",
            "method.temperature": 0.5,
            "method.proj_layers": 3,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "backbone.zero_init_residual": True,
            "optim.lr": 1.0,
            "optim.lr_scaling": "linear",
            "optim.weight_decay": 1e-4,
            "optim.warmup_epochs": 10,
            "train.batch_size": 512,
            "train.epochs": 1000,
            **views(0, count=2, size=32, **HALF_JITTER, blur_p=0.0, interpolation="bicubic"),
        },
        "effective_lr": 2.0,
        "exclude_bias_norm": True,
        "deviations": {
            "method.queue_size": (4096, 0, "the paper's memory scaled to CIFAR; the command has none"),
            "method.momentum": (0.99, None, "EMA of that memory"),
        },
    },
    # ------------------------------------------------------------------ MoCo v1 / v2
    "mocov1-imagenet": {
        "source": f"{MOCO} main_moco.py defaults (--epochs 200, --batch-size 256, --lr 0.03, --schedule 120 160, "
        "--momentum 0.9, --wd 1e-4, --moco-dim 128, --moco-k 65536, --moco-m 0.999, --moco-t 0.07), "
        "main_moco.py:293-297 (SGD over model.parameters()), :348-350 (v1 augmentation), :498-504 "
        "(adjust_learning_rate); README.md:44-50",
        "values": {
            "method.name": "mocov1",
            "method.temperature": 0.07,
            "method.momentum": 0.999,
            "method.queue_size": 65536,
            "method.proj_layers": 1,
            "method.proj_out_dim": 128,
            "method.bn_splits": 8,
            "backbone.name": "resnet50",
            "backbone.zero_init_residual": False,
            "optim.name": "sgd",
            "optim.lr": 0.03,
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.weight_decay": 1e-4,
            "optim.warmup_epochs": 0,
            "optim.schedule": "step",
            "optim.lr_milestones": [120, 160],
            "optim.lr_gamma": 0.1,
            "train.batch_size": 256,
            "train.epochs": 200,
            **views(
                0,
                count=2,
                size=224,
                scale=(0.2, 1.0),
                jitter_p=1.0,
                brightness=0.4,
                contrast=0.4,
                saturation=0.4,
                hue=0.4,
                grayscale_p=0.2,
                blur_p=0.0,
                interpolation="bilinear",
            ),
        },
        "effective_lr": 0.03,
        "exclude_bias_norm": False,
    },
    "mocov1-cifar10": {
        "source": f"{MOCO_DEMO}: --lr 0.06 (batch 512), --epochs 200, args.cos True, --batch-size 512, --wd 5e-4, "
        "--moco-dim 128, --moco-k 4096, --moco-m 0.99, --moco-t 0.1, --bn-splits 8, --knn-k 200, --knn-t 0.1; "
        "RandomResizedCrop(32), ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, RandomGrayscale(0.2); "
        "SGD(model.parameters(), momentum 0.9); resnet18 with a 3x3 stride-1 conv1, no max-pool, fc 128",
        "values": {
            **DEMO_MEAN_STD,
            "method.name": "mocov1",
            "method.temperature": 0.1,
            "method.momentum": 0.99,
            "method.queue_size": 4096,
            "method.proj_layers": 1,
            "method.proj_out_dim": 128,
            "method.bn_splits": 8,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "backbone.zero_init_residual": False,
            "optim.name": "sgd",
            "optim.lr": 0.03,
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.weight_decay": 5e-4,
            "optim.warmup_epochs": 0,
            "optim.schedule": "cosine",
            "optim.min_lr": 0.0,
            "train.batch_size": 512,
            "train.epochs": 200,
            "knn.k": 200,
            "knn.temperature": 0.1,
            **views(
                0,
                count=2,
                size=32,
                scale=(0.08, 1.0),
                **HALF_JITTER,
                blur_p=0.0,
                interpolation="bilinear",
            ),
        },
        "effective_lr": 0.06,
        "exclude_bias_norm": False,
    },
    "mocov2-imagenet": {
        "source": f"{MOCO} main_moco.py with --mlp --moco-t 0.2 --aug-plus --cos (README.md MoCo v2 command): "
        "builder.py:44-51 (MLP head), main_moco.py:331-340 (aug-plus), :500-501 (cosine); other defaults as v1",
        "values": {
            "method.name": "mocov2",
            "method.temperature": 0.2,
            "method.momentum": 0.999,
            "method.queue_size": 65536,
            "method.proj_layers": 2,
            "method.proj_hidden_dim": 0,  # 2048 for ResNet-50
            "method.proj_out_dim": 128,
            "method.bn_splits": 8,
            "backbone.name": "resnet50",
            "optim.name": "sgd",
            "optim.lr": 0.03,
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.weight_decay": 1e-4,
            "optim.warmup_epochs": 0,
            "optim.schedule": "cosine",
            "optim.min_lr": 0.0,
            "train.batch_size": 256,
            "train.epochs": 200,
            **views(
                0,
                count=2,
                size=224,
                scale=(0.2, 1.0),
                **HALF_JITTER,
                blur_p=0.5,
                blur_sigma=(0.1, 2.0),
                interpolation="bilinear",
            ),
        },
        "effective_lr": 0.03,
        "exclude_bias_norm": False,
    },
    "mocov2-cifar10": {
        "source": f"{MOCO_DEMO} (as mocov1-cifar10), with MoCo v2's MLP head ({MOCO} moco/builder.py:44-51)",
        "values": {
            **DEMO_MEAN_STD,
            "method.name": "mocov2",
            "method.temperature": 0.1,
            "method.momentum": 0.99,
            "method.queue_size": 4096,
            "method.proj_out_dim": 128,
            "method.bn_splits": 8,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "optim.name": "sgd",
            "optim.lr": 0.03,
            "optim.lr_scaling": "linear",
            "optim.weight_decay": 5e-4,
            "optim.warmup_epochs": 0,
            "optim.schedule": "cosine",
            "train.batch_size": 512,
            "train.epochs": 200,
            "knn.k": 200,
            "knn.temperature": 0.1,
            **views(
                0,
                count=2,
                size=32,
                scale=(0.08, 1.0),
                **HALF_JITTER,
                blur_p=0.0,
                interpolation="bilinear",
            ),
        },
        "effective_lr": 0.06,
        "exclude_bias_norm": False,
        "deviations": {"method.proj_layers": (2, 1, "MoCo v2's MLP head; the demo's head is v1's linear one")},
    },
    # ------------------------------------------------------------------ MoCo v3
    "mocov3-r50-imagenet": {
        "source": f"{MOCOV3} CONFIG.md (ResNet-50, 100-epoch: --moco-m-cos --crop-min=.2); main_moco.py defaults "
        "(-b 4096, --lr 0.6, --wd 1e-6, --momentum 0.9, --epochs 100, --warmup-epochs 10, --moco-dim 256, "
        "--moco-mlp-dim 4096, --moco-m 0.99, --moco-t 1.0, --optimizer lars), main_moco.py:190 (lr x bs/256), "
        ":263-281 (augmentation, bilinear RandomResizedCrop); moco/optimizer.py:27 (no wd or adaptation on 1-D); "
        "moco/builder.py (R50: 2-layer projector, predictor without last BN); zero_init_residual=True",
        "values": {
            "method.name": "mocov3",
            "method.temperature": 1.0,
            "method.momentum": 0.99,
            "method.momentum_end": 1.0,
            "method.proj_layers": 2,
            "method.proj_hidden_dim": 4096,
            "method.proj_out_dim": 256,
            "method.pred_hidden_dim": 4096,
            "method.pred_last_bn": False,
            "backbone.name": "resnet50",
            "backbone.zero_init_residual": True,
            "optim.name": "lars",
            "optim.lr": 0.6,
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.trust_coefficient": 0.001,
            "optim.weight_decay": 1e-6,
            "optim.warmup_epochs": 10,
            "optim.min_lr": 0.0,
            "train.batch_size": 4096,
            "train.epochs": 100,
            **asymmetric(224, scale=(0.2, 1.0), interpolation="bilinear"),
        },
        "effective_lr": 9.6,
        "exclude_bias_norm": True,
    },
    "mocov3-vits16-imagenet": {
        "source": f"{MOCOV3} CONFIG.md (ViT-Small, 4-node: --optimizer=adamw --lr=1.5e-4 --weight-decay=.1 "
        "--epochs=300 --warmup-epochs=40 --stop-grad-conv1 --moco-m-cos --moco-t=.2, batch 4096); "
        "main_moco.py:229 (AdamW over model.parameters()), :263-281 (augmentation, crop-min 0.08, bilinear); "
        "vits.py (12 heads, sin-cos position embedding); moco/builder.py (ViT: 3-layer projector, last BN in "
        "the predictor)",
        "values": {
            "method.name": "mocov3",
            "method.temperature": 0.2,
            "method.momentum": 0.99,
            "method.proj_layers": 3,
            "method.proj_hidden_dim": 4096,
            "method.proj_out_dim": 256,
            "method.pred_last_bn": True,
            "backbone.name": "vit_small_patch16",
            "backbone.num_heads": 12,
            "backbone.pos_embed": "sincos",
            "backbone.freeze_patch_embed": True,
            "backbone.weight_init": "moco",
            "optim.name": "adamw",
            "optim.lr": 1.5e-4,
            "optim.lr_scaling": "linear",
            "optim.weight_decay": 0.1,
            "optim.warmup_epochs": 40,
            "train.batch_size": 4096,
            "train.epochs": 300,
            **asymmetric(224, scale=(0.08, 1.0), interpolation="bilinear"),
        },
        "effective_lr": 2.4e-3,
        "deviations": {
            "exclude_bias_norm": (
                True,
                False,
                "official AdamW decays every parameter; documented in methods/mocov3.py",
            ),
        },
    },
    "mocov3-cifar10": {
        "source": f"{SOLO} scripts/pretrain/cifar/mocov3.yaml (lars lr 0.3, eta 0.02, clip_lr, exclude_bias_n_norm, "
        "wd 1e-6, batch 256, 1000 epochs, temperature 0.2, base_tau 0.99, proj 4096/256, pred 4096), "
        "augmentations/asymmetric.yaml, solo/methods/mocov3.py:55-75 (ResNet: 2-layer heads, predictor without "
        f"last BN); {SOLO_COMMON}",
        "values": {
            **CIFAR_MEAN_STD,
            "method.name": "mocov3",
            "method.temperature": 0.2,
            "method.momentum": 0.99,
            "method.momentum_end": 1.0,
            "method.proj_layers": 2,
            "method.proj_hidden_dim": 4096,
            "method.proj_out_dim": 256,
            "method.pred_hidden_dim": 4096,
            "method.pred_last_bn": False,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "backbone.zero_init_residual": False,
            "optim.name": "lars",
            "optim.lr": 0.3,
            "optim.lr_scaling": "linear",
            "optim.trust_coefficient": 0.02,
            "optim.lars_clip": True,
            "optim.weight_decay": 1e-6,
            "optim.warmup_epochs": 10,
            "optim.warmup_start_lr": 3e-5,
            "optim.min_lr": 0.0,
            "train.batch_size": 256,
            "train.epochs": 1000,
            **asymmetric(32, blur=(0.0, 0.0)),
        },
        "effective_lr": 0.3,
        "exclude_bias_norm": True,
    },
    # ------------------------------------------------------------------ SwAV
    "swav-imagenet": {
        "source": f"{SWAV} src/multicropdataset.py:64-86 (PILRandomGaussianBlur: Pillow's untruncated blur); "
        "scripts/swav_800ep_pretrain.sh (64 GPUs x --batch_size 64, --nmb_crops 2 6 --size_crops "
        "224 96 --min_scale_crops 0.14 0.05 --max_scale_crops 1. 0.14, --temperature 0.1 --epsilon 0.05 "
        "--sinkhorn_iterations 3 --feat_dim 128 --nmb_prototypes 3000 --queue_length 0 --epochs 800 --base_lr 4.8 "
        "--final_lr 0.0048 --freeze_prototypes_niters 313 --wd 1e-6 --warmup_epochs 10 --start_warmup 0.3); "
        "main_swav.py:171-177 (LARC(SGD(model.parameters()), trust 0.001, clip=False)); "
        "src/multicropdataset.py:40-48 (RandomResizedCrop, bilinear), colour distortion strength 1, blur p=0.5",
        "values": {
            "method.name": "swav",
            "method.temperature": 0.1,
            "method.epsilon": 0.05,
            "method.sinkhorn_iterations": 3,
            "method.num_prototypes": 3000,
            "method.proj_hidden_dim": 2048,
            "method.proj_out_dim": 128,
            "method.freeze_prototypes_epochs": 1,
            "method.queue_length": 0,
            "backbone.name": "resnet50",
            "optim.name": "lars",
            "optim.lr": 0.3,
            "optim.lr_scaling": "linear",
            "optim.trust_coefficient": 0.001,
            "optim.lars_clip": False,
            "optim.weight_decay": 1e-6,
            "optim.warmup_epochs": 10,
            "optim.warmup_start_lr": 0.3,
            "optim.min_lr": 0.0048,
            "train.batch_size": 4096,
            "train.epochs": 800,
            **views(
                0,
                count=2,
                size=224,
                scale=(0.14, 1.0),
                **SIMCLR_JITTER,
                blur_p=0.5,
                blur_kernel_frac=0.0,
                solarize_p=0.0,
                interpolation="bilinear",
            ),
            **views(
                1,
                count=6,
                size=96,
                scale=(0.05, 0.14),
                **SIMCLR_JITTER,
                blur_p=0.5,
                blur_kernel_frac=0.0,
                solarize_p=0.0,
                interpolation="bilinear",
            ),
        },
        "effective_lr": 4.8,
        "exclude_bias_norm": False,
    },
    "swav-imagenet-bs256": {
        "source": f"{SWAV} scripts/swav_200ep_bs256_pretrain.sh (4 GPUs x --batch_size 64, --queue_length 3840 "
        "--epoch_queue_starts 15 --epochs 200 --base_lr 0.6 --final_lr 0.0006 --freeze_prototypes_niters 5005 "
        "--wd 1e-6 --warmup_epochs 0, crops as the 800-epoch script)",
        "values": {
            "method.name": "swav",
            "method.queue_length": 3840,
            "method.queue_start_epoch": 15,
            "method.freeze_prototypes_epochs": 1,
            "method.num_prototypes": 3000,
            "optim.lr": 0.6,
            "optim.lr_scaling": "linear",
            "optim.warmup_epochs": 0,
            "optim.min_lr": 0.0006,
            "optim.weight_decay": 1e-6,
            "train.batch_size": 256,
            "train.epochs": 200,
            "data.views.0.count": 2,
            "data.views.1.count": 6,
            "data.views.0.interpolation": "bilinear",
            "data.views.1.interpolation": "bilinear",
        },
        "effective_lr": 0.6,
        "exclude_bias_norm": False,
    },
    "swav-cifar10": {
        "source": f"{SOLO} solo/data/pretrain_dataloader.py:77-103 (Pillow's untruncated blur); "
        "scripts/pretrain/cifar/swav.yaml (proj 2048/128, queue_size 3840, num_prototypes 3000, "
        "epoch_queue_starts 50, freeze_prototypes_epochs 2, temperature 0.1, lars lr 0.6, wd 1e-6, eta 0.02, "
        "clip_lr, batch 256, 1000 epochs), augmentations/symmetric.yaml (2 crops of 32, jitter 0.8/0.8/0.8/0.2 "
        f"p=0.8, grayscale 0.2, blur 0.5), solo/methods/swav.py:102-103 (sk_epsilon 0.05, sk_iters 3); {SOLO_COMMON}",
        "values": {
            **CIFAR_MEAN_STD,
            "method.name": "swav",
            "method.temperature": 0.1,
            "method.epsilon": 0.05,
            "method.sinkhorn_iterations": 3,
            "method.num_prototypes": 3000,
            "method.proj_hidden_dim": 2048,
            "method.proj_out_dim": 128,
            "method.freeze_prototypes_epochs": 2,
            "method.queue_length": 3840,
            "method.queue_start_epoch": 50,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "backbone.zero_init_residual": False,
            "optim.name": "lars",
            "optim.lr": 0.6,
            "optim.lr_scaling": "linear",
            "optim.trust_coefficient": 0.02,
            "optim.lars_clip": True,
            "optim.weight_decay": 1e-6,
            "optim.warmup_epochs": 10,
            "optim.warmup_start_lr": 3e-5,
            "optim.min_lr": 0.0,
            "train.batch_size": 256,
            "train.epochs": 1000,
            **views(
                0,
                count=1,
                size=32,
                scale=(0.08, 1.0),
                **SIMCLR_JITTER,
                blur_p=0.5,
                blur_kernel_frac=0.0,
                solarize_p=0.0,
                interpolation="bicubic",
            ),
            **views(
                1,
                count=1,
                size=32,
                scale=(0.08, 1.0),
                **SIMCLR_JITTER,
                blur_p=0.5,
                blur_kernel_frac=0.0,
                solarize_p=0.0,
                interpolation="bicubic",
            ),
        },
        "effective_lr": 0.6,
        "deviations": {
            "exclude_bias_norm": (
                False,
                True,
                "SwAV decays and adapts every parameter as main_swav.py does; solo-learn excludes biases and norms",
            ),
        },
    },
    # ------------------------------------------------------------------ SimSiam
    "simsiam-imagenet": {
        "source": f"{SIMSIAM} main_simsiam.py defaults (-b 512, --lr 0.05, --momentum 0.9, --wd 1e-4, --epochs 100, "
        "--dim 2048, --pred-dim 512), :157 (lr x bs/256), :193-201 (SGD over all parameters), :229-238 "
        "(MoCo v2 augmentation, bilinear), :359-366 (cosine, no warm-up, --fix-pred-lr); README.md:29-33; "
        "simsiam/builder.py:24 (zero_init_residual=True)",
        "values": {
            "method.name": "simsiam",
            "method.proj_layers": 3,
            "method.proj_out_dim": 2048,
            "method.pred_hidden_dim": 512,
            "method.fix_pred_lr": True,
            "backbone.name": "resnet50",
            "backbone.zero_init_residual": True,
            "optim.name": "sgd",
            "optim.lr": 0.05,
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.weight_decay": 1e-4,
            "optim.warmup_epochs": 0,
            "optim.schedule": "cosine",
            "optim.min_lr": 0.0,
            "train.batch_size": 512,
            "train.epochs": 100,
            **views(0, count=2, size=224, scale=(0.2, 1.0), **HALF_JITTER, blur_p=0.5, interpolation="bilinear"),
        },
        "effective_lr": 0.1,
        "exclude_bias_norm": False,
    },
    "simsiam-cifar10": {
        "source": "arXiv:2011.10566 appendix D (paper; no official CIFAR code): ResNet-18 CIFAR variant, SGD lr "
        "0.03 x bs/256, wd 5e-4, momentum 0.9, batch 512, 800 epochs, 2-layer projector 2048; views as "
        f"{SIMSIAM} main_simsiam.py:229-238 without blur",
        "values": {
            "method.name": "simsiam",
            "method.proj_layers": 2,
            "method.proj_hidden_dim": 2048,
            "method.proj_out_dim": 2048,
            "method.pred_hidden_dim": 512,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "optim.name": "sgd",
            "optim.lr": 0.03,
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.weight_decay": 5e-4,
            "optim.warmup_epochs": 0,
            "train.batch_size": 512,
            "train.epochs": 800,
            **views(0, count=2, size=32, scale=(0.2, 1.0), **HALF_JITTER, blur_p=0.0, interpolation="bilinear"),
        },
        "effective_lr": 0.06,
        "exclude_bias_norm": False,
    },
    # ------------------------------------------------------------------ BYOL
    "byol-imagenet": {
        "source": f"{BYOL} byol/configs/byol.py:21-23 (1000 epochs: lr 0.2, wd 1.5e-6, EMA 0.996), :40-42 "
        "(heads 4096/256/4096), :57-64 (eta 1e-3, momentum 0.9, 10 warm-up epochs); byol/main_loop.py:37 "
        "(batch 4096); byol/utils/schedules.py (lr x bs/256, cosine to 0, tau schedule); "
        "byol/utils/networks.py:40-45 (output layers with_bias=False); byol/utils/augmentations.py, "
        "byol/utils/dataset.py:201 (bicubic); Haiku BlockV1 zero-init last BN (byol/README.md:101-111)",
        "values": {
            "method.name": "byol",
            "method.momentum": 0.996,
            "method.momentum_end": 1.0,
            "method.proj_hidden_dim": 4096,
            "method.proj_out_dim": 256,
            "method.pred_hidden_dim": 4096,
            "backbone.name": "resnet50",
            "backbone.zero_init_residual": True,
            "optim.name": "lars",
            "optim.lr": 0.2,
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.trust_coefficient": 0.001,
            "optim.weight_decay": 1.5e-6,
            "optim.warmup_epochs": 10,
            "optim.min_lr": 0.0,
            "train.batch_size": 4096,
            "train.epochs": 1000,
            **asymmetric(224),
        },
        "effective_lr": 3.2,
        "exclude_bias_norm": True,
    },
    "byol-cifar10": {
        "source": f"{SOLO} scripts/pretrain/cifar/byol.yaml (proj 4096/256, pred 4096, base_tau 0.99, final_tau 1.0, "
        "lars lr 1.0, wd 1e-5, eta 0.02, clip_lr, exclude_bias_n_norm, batch 256, 1000 epochs), "
        f"augmentations/asymmetric.yaml; {SOLO_COMMON}",
        "values": {
            **CIFAR_MEAN_STD,
            "method.name": "byol",
            "method.momentum": 0.99,
            "method.momentum_end": 1.0,
            "method.proj_hidden_dim": 4096,
            "method.proj_out_dim": 256,
            "method.pred_hidden_dim": 4096,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "backbone.zero_init_residual": False,
            "optim.name": "lars",
            "optim.lr": 1.0,
            "optim.lr_scaling": "linear",
            "optim.trust_coefficient": 0.02,
            "optim.lars_clip": True,
            "optim.weight_decay": 1e-5,
            "optim.warmup_epochs": 10,
            "optim.warmup_start_lr": 3e-5,
            "optim.min_lr": 0.0,
            "train.batch_size": 256,
            "train.epochs": 1000,
            **asymmetric(32, blur=(0.0, 0.0)),
        },
        "effective_lr": 1.0,
        "exclude_bias_norm": True,
    },
    # ------------------------------------------------------------------ Barlow Twins
    "barlowtwins-imagenet": {
        "source": f"{BT} main.py:25-45 defaults (--epochs 1000, --batch-size 2048, --learning-rate-weights 0.2, "
        "--learning-rate-biases 0.0048, --weight-decay 1e-6, --lambd 0.0051, --projector 8192-8192-8192), "
        ":155-170 (lr x bs/256, 10 warm-up epochs, cosine to 1/1000), :191 (zero_init_residual=True), :215-216 "
        "(non-differentiable all_reduce: gradient / W), :290-326 (augmentation, bicubic); README.md:54-60 (the "
        "best model is `python main.py`, 16 V100 GPUs: W = 16, loss_scale 1/16)",
        "values": {
            "method.name": "barlowtwins",
            "method.proj_hidden_dim": 8192,
            "method.proj_out_dim": 8192,
            "method.proj_layers": 3,
            "method.lambd": 0.0051,
            "method.bias_lr_scale": 0.0048 / 0.2,
            "method.loss_scale": 1 / 16,
            "backbone.name": "resnet50",
            "backbone.zero_init_residual": True,
            "optim.name": "lars",
            "optim.lr": 0.2,
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.trust_coefficient": 0.001,
            "optim.weight_decay": 1e-6,
            "optim.warmup_epochs": 10,
            "optim.min_lr": 0.2 * 2048 / 256 / 1000,
            "train.batch_size": 2048,
            "train.epochs": 1000,
            **asymmetric(224),
        },
        "effective_lr": 1.6,
        "exclude_bias_norm": True,
    },
    "barlowtwins-cifar10": {
        "source": f"{SOLO} scripts/pretrain/cifar/barlow.yaml (proj 2048/2048, scale_loss 0.1, lars lr 0.3, wd 1e-4, "
        "eta 0.02, clip_lr, exclude_bias_n_norm, batch 256, 1000 epochs), solo/methods/barlow_twins.py:77 "
        f"(lamb 0.0051), augmentations/asymmetric.yaml; {SOLO_COMMON}",
        "values": {
            **CIFAR_MEAN_STD,
            "method.name": "barlowtwins",
            "method.proj_hidden_dim": 2048,
            "method.proj_out_dim": 2048,
            "method.proj_layers": 3,
            "method.lambd": 0.0051,
            "method.bias_lr_scale": 1.0,
            "method.loss_scale": 0.1,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "backbone.zero_init_residual": False,
            "optim.name": "lars",
            "optim.lr": 0.3,
            "optim.lr_scaling": "linear",
            "optim.trust_coefficient": 0.02,
            "optim.lars_clip": True,
            "optim.weight_decay": 1e-4,
            "optim.warmup_epochs": 10,
            "optim.warmup_start_lr": 3e-5,
            "optim.min_lr": 0.0,
            "train.batch_size": 256,
            "train.epochs": 1000,
            **asymmetric(32, blur=(0.0, 0.0)),
        },
        "effective_lr": 0.3,
        "exclude_bias_norm": True,
    },
    # ------------------------------------------------------------------ DINO
    "dino-vits16-imagenet": {
        "source": f"{DINO} utils.py:36-55 (GaussianBlur: Pillow's untruncated blur); "
        "main_dino.py defaults (--arch vit_small --patch_size 16 --out_dim 65536 --norm_last_layer "
        "True --momentum_teacher 0.996 --use_bn_in_head False --warmup_teacher_temp 0.04 --teacher_temp 0.04 "
        "--warmup_teacher_temp_epochs 0 --weight_decay 0.04 --weight_decay_end 0.4 --clip_grad 3.0 "
        "--batch_size_per_gpu 64 --epochs 100 --freeze_last_layer 1 --lr 0.0005 --warmup_epochs 10 --min_lr 1e-6 "
        "--optimizer adamw --drop_path_rate 0.1 --global_crops_scale 0.4 1 --local_crops_number 8 "
        "--local_crops_scale 0.05 0.4), main_dino.py:239 (lr x bs/256), :419-456 (DataAugmentationDINO, bicubic); "
        "utils.py:132-141 (clip_gradients: per parameter); README.md:163-166 (8 GPUs: batch 512)",
        "values": {
            "method.name": "dino",
            "method.out_dim": 65536,
            "method.hidden_dim": 2048,
            "method.bottleneck_dim": 256,
            "method.use_bn": False,
            "method.norm_last_layer": True,
            "method.momentum": 0.996,
            "method.momentum_end": 1.0,
            "method.warmup_teacher_temp": 0.04,
            "method.teacher_temp": 0.04,
            "method.warmup_teacher_temp_epochs": 0,
            "method.student_temp": 0.1,
            "method.center_momentum": 0.9,
            "method.freeze_last_layer_epochs": 1,
            "backbone.name": "vit_small_patch16",
            "backbone.drop_path_rate": 0.1,
            "optim.name": "adamw",
            "optim.lr": 5e-4,
            "optim.lr_scaling": "linear",
            "optim.min_lr": 1e-6,
            "optim.warmup_epochs": 10,
            "optim.weight_decay": 0.04,
            "optim.weight_decay_end": 0.4,
            "optim.clip_grad": 3.0,
            "optim.clip_mode": "per_param",
            "train.batch_size": 512,
            "train.epochs": 100,
            **views(
                0,
                count=1,
                size=224,
                scale=(0.4, 1.0),
                **BYOL_JITTER,
                blur_p=1.0,
                blur_kernel_frac=0.0,
                solarize_p=0.0,
                interpolation="bicubic",
            ),
            **views(
                1,
                count=1,
                size=224,
                scale=(0.4, 1.0),
                **BYOL_JITTER,
                blur_p=0.1,
                blur_kernel_frac=0.0,
                solarize_p=0.2,
                interpolation="bicubic",
            ),
            **views(
                2,
                count=8,
                size=96,
                scale=(0.05, 0.4),
                **BYOL_JITTER,
                blur_p=0.5,
                blur_kernel_frac=0.0,
                solarize_p=0.0,
                interpolation="bicubic",
            ),
        },
        "effective_lr": 1e-3,
        "exclude_bias_norm": True,
    },
    "dino-vits16-imagenet-boost": {
        "source": f"{DINO} README.md:185-202 (run_with_submitit.py --arch vit_small --epochs 300 --teacher_temp 0.07 "
        "--warmup_teacher_temp_epochs 30 --norm_last_layer false; 76.0% linear), run_with_submitit.py:29-30 "
        "(8 GPUs x 2 nodes: 16 x 64 = 1024); the rest main_dino.py's defaults",
        "values": {
            "method.name": "dino",
            "method.out_dim": 65536,
            "method.norm_last_layer": False,
            "method.warmup_teacher_temp": 0.04,
            "method.teacher_temp": 0.07,
            "method.warmup_teacher_temp_epochs": 30,
            "method.momentum": 0.996,
            "backbone.name": "vit_small_patch16",
            "backbone.drop_path_rate": 0.1,
            "optim.name": "adamw",
            "optim.lr": 5e-4,
            "optim.min_lr": 1e-6,
            "optim.weight_decay": 0.04,
            "optim.weight_decay_end": 0.4,
            "optim.clip_grad": 3.0,
            "optim.clip_mode": "per_param",
            "train.batch_size": 1024,
            "train.epochs": 300,
            "data.views.2.count": 8,
            "data.views.2.scale": (0.05, 0.4),
        },
        "effective_lr": 2e-3,
        "exclude_bias_norm": True,
    },
    "dino-vits8-imagenet": {
        "source": f"{DINO} main_dino.py defaults with --patch_size 8; main_dino.py --patch_size help (full "
        "precision under 16); README.md has no ViT-S/8 command and the released args.txt is a download "
        "(dino issue #104: 16 per GPU on 64 GPUs, --use_fp16 false)",
        "values": {
            "method.name": "dino",
            "method.teacher_temp": 0.04,
            "method.norm_last_layer": True,
            "backbone.name": "vit_small_patch8",
            "backbone.drop_path_rate": 0.1,
            "train.precision": "fp32",
            "train.batch_size": 512,
            "train.epochs": 100,
            "optim.clip_grad": 3.0,
            "optim.clip_mode": "per_param",
            "data.views.2.count": 8,
        },
        "effective_lr": 1e-3,
        "exclude_bias_norm": True,
    },
    "dino-r50-imagenet": {
        "source": f"{DINO} utils.py:36-55 (GaussianBlur: Pillow's untruncated blur); "
        "dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/args.txt (a download, not in "
        f"{DINO}; unverified here), confirmed as the released run by dino issue #133 (batch 4080 over 80 GPUs)",
        "values": {
            "method.name": "dino",
            "method.out_dim": 60000,
            "method.use_bn": True,
            "method.norm_last_layer": True,
            "method.momentum": 0.996,
            "method.warmup_teacher_temp": 0.04,
            "method.teacher_temp": 0.07,
            "method.warmup_teacher_temp_epochs": 50,
            "method.freeze_last_layer_epochs": 1,
            "backbone.name": "resnet50",
            "backbone.drop_path_rate": 0.0,
            "optim.name": "lars",
            "optim.lr": 0.3,
            "optim.lr_scaling": "linear",
            "optim.min_lr": 0.0048,
            "optim.warmup_epochs": 10,
            "optim.weight_decay": 1e-6,
            "optim.weight_decay_end": None,
            "optim.clip_grad": 0.0,
            "train.batch_size": 4080,
            "train.epochs": 800,
            **views(0, count=1, size=224, scale=(0.14, 1.0), blur_p=1.0, blur_kernel_frac=0.0, solarize_p=0.0),
            **views(1, count=1, size=224, scale=(0.14, 1.0), blur_p=0.1, blur_kernel_frac=0.0, solarize_p=0.2),
            **views(2, count=6, size=96, scale=(0.05, 0.14), blur_p=0.5, blur_kernel_frac=0.0, solarize_p=0.0),
        },
        "effective_lr": 0.3 * 4080 / 256,
        "exclude_bias_norm": True,
    },
    "dino-cifar10": {
        "source": f"{SOLO} scripts/pretrain/cifar/dino.yaml (proj_hidden_dim 2048, proj_output_dim 256, "
        "num_prototypes 4096, base_tau 0.9995, final_tau 1.0, lars lr 0.3, wd 1e-6, eta 0.02, clip_lr, "
        "exclude_bias_n_norm, batch 256, 1000 epochs), solo/methods/dino.py:196-224 (clip_grad 0, "
        "freeze_last_layer 1, norm_last_layer True, use_bn_in_head False, student 0.1, teacher 0.07, warm-up "
        "teacher 0.04 over 0 epochs), solo/losses/dino.py:37 (center 0.9), augmentations/asymmetric.yaml; "
        f"{SOLO_COMMON}",
        "values": {
            **CIFAR_MEAN_STD,
            "method.name": "dino",
            "method.out_dim": 4096,
            "method.hidden_dim": 2048,
            "method.bottleneck_dim": 256,
            "method.use_bn": False,
            "method.norm_last_layer": True,
            "method.momentum": 0.9995,
            "method.momentum_end": 1.0,
            "method.teacher_temp": 0.07,
            "method.warmup_teacher_temp_epochs": 0,
            "method.student_temp": 0.1,
            "method.center_momentum": 0.9,
            "method.freeze_last_layer_epochs": 1,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "backbone.zero_init_residual": False,
            "optim.name": "lars",
            "optim.lr": 0.3,
            "optim.lr_scaling": "linear",
            "optim.trust_coefficient": 0.02,
            "optim.lars_clip": True,
            "optim.weight_decay": 1e-6,
            "optim.weight_decay_end": None,
            "optim.warmup_epochs": 10,
            "optim.warmup_start_lr": 3e-5,
            "optim.min_lr": 0.0,
            "optim.clip_grad": 0.0,
            "train.batch_size": 256,
            "train.epochs": 1000,
            **asymmetric(32, blur=(0.0, 0.0)),
        },
        "effective_lr": 0.3,
        "exclude_bias_norm": True,
    },
    # ------------------------------------------------------------------ DCL / DCLW
    "dcl-imagenet": {
        "source": "arXiv:2110.06848 (paper; no official code, lightly-ai/lightly issue #782): abstract (SimCLR with "
        f"DCL, batch 256, 200 epochs), eq. (6); the rest SimCLR's ({SIMCLR_V1}, as simclr-imagenet: head, views, LARS "
        "eta 1e-3, wd 1e-6, 10 warm-up epochs, init_zero), with SimCLR's small-batch rule lr 0.075 x sqrt(bs) "
        f"(arXiv:2002.05709 appendix B.1); {LIGHTLY} benchmarks/imagenet/resnet50/dcl.py:28-29 (SimCLRProjectionHead, "
        "DCLLoss(temperature=0.1)), :91 (0.075 x sqrt(bs)), :95 (wd 1e-6); "
        "docs/source/getting_started/benchmarks.rst:43,49",
        "values": {
            "method.name": "dcl",
            "method.temperature": 0.1,
            "method.proj_layers": 2,
            "method.proj_hidden_dim": 0,  # the backbone's width
            "method.proj_out_dim": 128,
            "method.proj_last_bn": True,
            "method.gather": True,
            "backbone.name": "resnet50",
            "backbone.zero_init_residual": True,
            "optim.name": "lars",
            "optim.lr": 0.075,
            "optim.lr_scaling": "sqrt",
            "optim.momentum": 0.9,
            "optim.trust_coefficient": 0.001,
            "optim.lars_clip": False,
            "optim.weight_decay": 1e-6,
            "optim.warmup_epochs": 10,
            "optim.warmup_start_lr": 0.0,
            "optim.schedule": "cosine",
            "optim.min_lr": 0.0,
            "train.batch_size": 256,
            "train.epochs": 200,
            **views(
                0,
                count=2,
                size=224,
                scale=(0.08, 1.0),
                hflip_p=0.5,
                **SIMCLR_JITTER,
                blur_p=0.5,
                blur_sigma=(0.1, 2.0),
                solarize_p=0.0,
                interpolation="bicubic",
            ),
        },
        "effective_lr": 1.2,
        "exclude_bias_norm": True,
        "deviations": {
            "data.mean": ((0.485, 0.456, 0.406), None, "the official SimCLR pipeline feeds [0, 1] pixels"),
        },
    },
    "dclw-imagenet": {
        "source": f"arXiv:2110.06848 sec. 3 (DCLW: negative von Mises-Fisher weight, sigma 0.5); {LIGHTLY} "
        "benchmarks/imagenet/resnet50/dclw.py:29 (DCLWLoss(temperature=0.1, sigma=0.5)), "
        f"lightly/loss/dcl_loss.py:35-38 (w = 2 - N softmax(s / sigma)); {DCL_REF} loss/dcl.py:42-43; the rest as "
        "dcl-imagenet",
        "values": {
            "method.name": "dclw",
            "method.sigma": 0.5,
            "method.temperature": 0.1,
            "method.proj_out_dim": 128,
            "backbone.name": "resnet50",
            "optim.lr": 0.075,
            "optim.lr_scaling": "sqrt",
            "optim.weight_decay": 1e-6,
            "train.batch_size": 256,
            "train.epochs": 200,
        },
        "effective_lr": 1.2,
        "exclude_bias_norm": True,
    },
    "dcl-cifar10": {
        "source": f"{LIGHTLY_CIFAR}:37 (batch 512, 800 epochs, 0.874 kNN), :756-785 (class DCL: "
        "ResNetGenerator('resnet-18'), SimCLRProjectionHead(512, 512, 128), DCLLoss() temperature 0.1, "
        "SGD(self.parameters(), lr 6e-2 x lr_factor, momentum 0.9, wd 5e-4), CosineAnnealingLR), :102-106 (epochs, kNN "
        "k 200, T 0.1), :125-126 (lr_factor = bs/128), :174-178 (SimCLRTransform(input_size=32, cj_strength=0.5, "
        "gaussian_blur=0.0): bilinear crops of scale 0.08-1)",
        "values": {
            **CIFAR_MEAN_STD,
            "method.name": "dcl",
            "method.temperature": 0.1,
            "method.proj_layers": 2,
            "method.proj_hidden_dim": 0,  # 512 for ResNet-18
            "method.proj_out_dim": 128,
            "method.proj_last_bn": True,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "backbone.zero_init_residual": False,
            "optim.name": "sgd",
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.nesterov": False,
            "optim.warmup_epochs": 0,
            "optim.schedule": "cosine",
            "optim.min_lr": 0.0,
            "train.batch_size": 512,
            "train.epochs": 800,
            "knn.k": 200,
            "knn.temperature": 0.1,
            **views(
                0,
                count=2,
                size=32,
                scale=(0.08, 1.0),
                hflip_p=0.5,
                **HALF_JITTER,
                blur_p=0.0,
                solarize_p=0.0,
                interpolation="bilinear",
            ),
        },
        "deviations": {
            "optim.lr": (0.06, 0.12, "selfsup's DCL loss is loss_a + loss_b, twice lightly's mean: half the lr"),
            "optim.weight_decay": (1e-3, 5e-4, "twice the wd at half the lr: exactly lightly's SGD update"),
            "exclude_bias_norm": (
                True,
                False,
                "lightly decays every parameter; DCL's method (SimCLR's) excludes 1-D ones",
            ),
        },
    },
    "dclw-cifar10": {
        "source": f"{LIGHTLY_CIFAR}:38 (DCLW, batch 512, 800 epochs, 0.871 kNN), :788-817 (class DCLW: DCLWLoss() "
        "temperature 0.1, sigma 0.5; model, optimizer and views as DCL's)",
        "values": {
            "method.name": "dclw",
            "method.sigma": 0.5,
            "method.temperature": 0.1,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "optim.name": "sgd",
            "train.batch_size": 512,
            "train.epochs": 800,
        },
        "deviations": {
            "optim.lr": (0.06, 0.12, "selfsup's DCL loss is loss_a + loss_b, twice lightly's mean: half the lr"),
            "optim.weight_decay": (1e-3, 5e-4, "twice the wd at half the lr: exactly lightly's SGD update"),
            "exclude_bias_norm": (
                True,
                False,
                "lightly decays every parameter; DCL's method (SimCLR's) excludes 1-D ones",
            ),
        },
    },
    # ------------------------------------------------------------------ TiCo
    "tico-imagenet": {
        "source": f"arXiv:2206.10698 (paper; no official code); {LIGHTLY} benchmarks/imagenet/resnet50/tico.py:25 "
        "(resnet50()), :28 (TiCoProjectionHead() 2048-4096-256), :33 (TiCoLoss(beta=0.9, rho=8.0)), :50-57 (tau "
        "0.99 -> 1, cosine per step), :62-68 (online view 1, momentum view 2), :95-118 (LARS lr 0.2 x bs/256, "
        "momentum 0.9, wd 1.5e-6, no wd on biases and norms), :119-129 (10 warm-up epochs, cosine; "
        "lightly/utils/scheduler.py:174 end_value 0.001), :134 (TiCoTransform = BYOL's views, "
        "lightly/transforms/byol_transform.py:100,215 bilinear); "
        "benchmarks/imagenet/README.md:59-60 and main.py:53-54 (2 x 128 = 256, 100 epochs); "
        f"lightly/loss/tico_loss.py:21-26 (beta 0.9, rho 8 from the paper); {TICO_REF} TiCo/main.py:88",
        "values": {
            "method.name": "tico",
            "method.proj_hidden_dim": 4096,
            "method.proj_out_dim": 256,
            "method.beta": 0.9,
            "method.rho": 8.0,
            "method.momentum": 0.99,
            "method.momentum_end": 1.0,
            "backbone.name": "resnet50",
            "backbone.zero_init_residual": False,
            "optim.name": "lars",
            "optim.lr": 0.2,
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.trust_coefficient": 0.001,
            "optim.lars_clip": False,
            "optim.weight_decay": 1.5e-6,
            "optim.warmup_epochs": 10,
            "optim.warmup_start_lr": 0.0,
            "optim.min_lr": 0.2 / 1000,
            "train.batch_size": 256,
            "train.epochs": 100,
            **asymmetric(224, interpolation="bilinear"),
        },
        "effective_lr": 0.2,
        "exclude_bias_norm": True,
    },
    "tico-cifar10": {
        "source": f"{LIGHTLY} docs/source/getting_started/benchmarks/imagenette_benchmark.py:1276-1328 (TiCoModel: "
        "TiCoProjectionHead(512, 1024, 256), TiCoLoss() beta 0.9 rho 8, tau 0.996 -> 1 cosine, SGD(self.parameters(), "
        "lr 0.3 x bs/256, momentum 0.9, wd 1e-4), 40 warm-up epochs at 800 epochs, CosineWarmupScheduler end 0.001), "
        ":149 (lr_factor), :171-173 (BYOL views); docs/source/getting_started/benchmarks.rst:127 (batch 256, 800 "
        "epochs); at 32 px without blur as examples/pytorch/tico.py:53-58",
        "values": {
            **CIFAR_MEAN_STD,
            "method.name": "tico",
            "method.proj_hidden_dim": 1024,
            "method.proj_out_dim": 256,
            "method.beta": 0.9,
            "method.rho": 8.0,
            "method.momentum": 0.996,
            "method.momentum_end": 1.0,
            "backbone.name": "resnet18",
            "backbone.zero_init_residual": False,
            "optim.name": "sgd",
            "optim.lr": 0.3,
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.weight_decay": 1e-4,
            "optim.warmup_epochs": 40,
            "optim.min_lr": 0.3 / 1000,
            "train.batch_size": 256,
            "train.epochs": 800,
            **asymmetric(32, blur=(0.0, 0.0), interpolation="bilinear"),
        },
        "effective_lr": 0.3,
        "deviations": {
            "backbone.cifar_stem": (
                True,
                False,
                "32 px images: the 3x3/1 stem of lightly's CIFAR-10 benchmark ResNets",
            ),
            "exclude_bias_norm": (
                True,
                False,
                "the Imagenette script decays every parameter; TiCo's method excludes "
                "1-D ones, as lightly's ImageNet benchmark",
            ),
        },
    },
    # ------------------------------------------------------------------ MMCR
    "mmcr-imagenet": {
        "source": f"{MMCR} pretrain_imagenet.py:8-14,25 (batch 2048, n_aug 2, lr 0.6, tau 0.99, lmbda 0, 100 epochs, "
        "MMCR_Momentum), :28-29 and README.md:24 (4 nodes x 4 GPUs), mmcr/imagenet/train.py:107 (8192-8192-512), "
        ":110-112 (SyncBN), :122-130 (LARS lr x bs/256, wd 1e-6, momentum 0.9, 1-D filtered), :133 (10 warm-up "
        "epochs, alpha_f 0.001), misc.py:7-34 (constant tau), :52-61 (eta 1e-3), models.py:21-40 (no biases), :27 "
        "(zero_init_residual), loss_mmcr_momentum.py:29-71 (non-differentiable gather: gradient / 16), data.py:113-168 "
        "(Barlow Twins' views, bicubic)",
        "values": {
            "method.name": "mmcr",
            "method.proj_hidden_dim": 8192,
            "method.proj_out_dim": 512,
            "method.proj_layers": 3,
            "method.lambd": 0.0,
            "method.momentum_encoder": True,
            "method.momentum": 0.99,
            "method.loss_scale": 1 / 16,
            "backbone.name": "resnet50",
            "backbone.zero_init_residual": True,
            "optim.name": "lars",
            "optim.lr": 0.6,
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.trust_coefficient": 0.001,
            "optim.lars_clip": False,
            "optim.weight_decay": 1e-6,
            "optim.warmup_epochs": 10,
            "optim.warmup_start_lr": 0.0,
            "optim.min_lr": 0.6 * 2048 / 256 / 1000,
            "train.batch_size": 2048,
            "train.epochs": 100,
            **asymmetric(224),
        },
        "effective_lr": 4.8,
        "exclude_bias_norm": True,
    },
    "mmcr-cifar10": {
        "source": f"{MMCR} pretrain_cifar_stl.py:7-12 (cifar10, batch 32, n_aug 40, lr 1e-3, lmbda 0, 500 epochs), "
        "mmcr/cifar_stl/train.py:24 (projector 512-128), :35 (Adam(model.parameters(), lr, weight_decay=1e-6), no "
        "schedule), :36 (no momentum encoder), models.py:13-40 (ResNet-50, 3x3/1 conv1, no max-pool, no biases), "
        "data.py:176-187 (RandomResizedCrop(32) bilinear, flip, jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale 0.2, the "
        "mean/std)",
        "values": {
            "data.mean": (0.4914, 0.4822, 0.4465),
            "data.std": (0.2023, 0.1994, 0.2010),
            "method.name": "mmcr",
            "method.proj_hidden_dim": 512,
            "method.proj_out_dim": 128,
            "method.proj_layers": 2,
            "method.lambd": 0.0,
            "method.momentum_encoder": False,
            "method.loss_scale": 1.0,
            "backbone.name": "resnet50",
            "backbone.cifar_stem": True,
            "backbone.zero_init_residual": False,
            "optim.lr": 1e-3,
            "optim.lr_scaling": "none",
            "optim.betas": (0.9, 0.999),
            "optim.weight_decay": 1e-6,
            "optim.warmup_epochs": 0,
            "optim.schedule": "step",
            "optim.lr_milestones": [],
            "train.batch_size": 32,
            "train.epochs": 500,
            **views(
                0,
                count=40,
                size=32,
                scale=(0.08, 1.0),
                hflip_p=0.5,
                **HALF_JITTER,
                blur_p=0.0,
                solarize_p=0.0,
                interpolation="bilinear",
            ),
        },
        "effective_lr": 1e-3,
        "deviations": {
            "optim.name": ("adamw", "adam", "AdamW's decoupled wd 1e-6 for Adam's L2 wd 1e-6, both negligible"),
            "exclude_bias_norm": (
                True,
                False,
                "the CIFAR Adam decays every parameter; MMCR's method excludes 1-D ones, as the official ImageNet LARS",
            ),
        },
    },
    # ------------------------------------------------------------------ VICReg
    "vicreg-imagenet": {
        "source": f"{VICREG} README.md:80 (run_with_submitit.py --arch resnet50 --epochs 1000 --batch-size 2048 "
        "--base-lr 0.2); main_vicreg.py:44 (--mlp 8192-8192-8192), :48 (--epochs default 100), :54 (--wd 1e-6), "
        ":58-63 (--sim-coeff 25 --std-coeff 25 --cov-coeff 1), :107 (SyncBatchNorm), :109-115 and :235-236 "
        "(LARS, 1-D parameters out of wd and adaptation), :167-181 (lr x bs/256, 10 warm-up epochs from 0, cosine "
        "to 1/1000), :190 (zero_init_residual=True), :205-207 (eps 1e-4, hinge at 1, the views' mean), :223-232 "
        "(Projector: last Linear without bias), :252 (eta 0.001); augmentations.py:37-84 (bicubic crops, jitter "
        "(0.4, 0.4, 0.2, 0.1) p=0.8, blur 1.0 / 0.1 with sigma 0.1-2.0, solarization 0 / 0.2, ImageNet mean/std)",
        "values": {
            "method.name": "vicreg",
            "method.proj_hidden_dim": 8192,
            "method.proj_out_dim": 8192,
            "method.proj_layers": 3,
            "method.sim_coeff": 25.0,
            "method.std_coeff": 25.0,
            "method.cov_coeff": 1.0,
            "method.gamma": 1.0,
            "method.eps": 1e-4,
            "method.gather": True,
            "backbone.name": "resnet50",
            "backbone.zero_init_residual": True,
            "optim.name": "lars",
            "optim.lr": 0.2,
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.trust_coefficient": 0.001,
            "optim.lars_clip": False,
            "optim.weight_decay": 1e-6,
            "optim.warmup_epochs": 10,
            "optim.warmup_start_lr": 0.0,
            "optim.schedule": "cosine",
            "optim.min_lr": 0.2 * 2048 / 256 / 1000,
            "train.batch_size": 2048,
            "train.epochs": 1000,
            "data.mean": (0.485, 0.456, 0.406),
            "data.std": (0.229, 0.224, 0.225),
            **asymmetric(224, blur_sigma=(0.1, 2.0)),
        },
        "effective_lr": 1.6,
        "exclude_bias_norm": True,
    },
    "vicreg-cifar10": {
        "source": f"{SOLO} scripts/pretrain/cifar/vicreg.yaml (proj_hidden_dim 2048, proj_output_dim 2048, "
        "sim/var/cov 25/25/1; its own views: crop 0.2-1, jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2, no "
        "blur, solarization 0.1, flip 0.5, two 32-px crops; lars lr 0.3, wd 1e-4, eta 0.02, clip_lr, "
        "exclude_bias_n_norm, batch 256, 1000 epochs), solo/methods/vicreg.py:53-61 (3-layer projector), "
        f"solo/losses/vicreg.py:52-56 (eps 1e-4, the views' hinges summed), :104-111 (gathered); {SOLO_COMMON}",
        "values": {
            **CIFAR_MEAN_STD,
            "method.name": "vicreg",
            "method.proj_hidden_dim": 2048,
            "method.proj_out_dim": 2048,
            "method.proj_layers": 3,
            "method.sim_coeff": 25.0,
            "method.cov_coeff": 1.0,
            "method.eps": 1e-4,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "backbone.zero_init_residual": False,
            "optim.name": "lars",
            "optim.lr": 0.3,
            "optim.lr_scaling": "linear",
            "optim.trust_coefficient": 0.02,
            "optim.lars_clip": True,
            "optim.weight_decay": 1e-4,
            "optim.warmup_epochs": 10,
            "optim.warmup_start_lr": 3e-5,
            "optim.min_lr": 0.0,
            "train.batch_size": 256,
            "train.epochs": 1000,
            **views(
                0,
                count=2,
                size=32,
                scale=(0.2, 1.0),
                hflip_p=0.5,
                **BYOL_JITTER,
                blur_p=0.0,
                solarize_p=0.1,
                interpolation="bicubic",
            ),
        },
        "effective_lr": 0.3,
        "exclude_bias_norm": True,
        "deviations": {
            "method.std_coeff": (
                50.0,
                25.0,
                "solo-learn sums the two views' variance hinges (solo/losses/vicreg.py:55), selfsup and the "
                "official code (main_vicreg.py:207) average them: 50 on the mean is solo-learn's 25 on the sum",
            ),
        },
    },
    # ------------------------------------------------------------------ NNCLR
    "nnclr-imagenet": {
        "source": f"{NNCLR_PAPER}: ResNet-50, projector [2048, 2048, 256] with BN after every layer, predictor "
        "[4096, 256], support set 98,304, temperature 0.1, batch 4096, LARS lr 0.3 x bs/256 = 4.8, 10 warm-up "
        f"epochs then cosine, wd 1e-6, 1000 epochs, BYOL's augmentations ({BYOL} byol/utils/augmentations.py, as "
        "byol-imagenet)",
        "values": {
            "method.name": "nnclr",
            "method.temperature": 0.1,
            "method.proj_hidden_dim": 2048,
            "method.proj_out_dim": 256,
            "method.proj_layers": 3,
            "method.pred_hidden_dim": 4096,
            "method.queue_size": 98304,
            "method.gather": True,
            "backbone.name": "resnet50",
            "optim.name": "lars",
            "optim.lr": 0.3,
            "optim.lr_scaling": "linear",
            "optim.momentum": 0.9,
            "optim.weight_decay": 1e-6,
            "optim.warmup_epochs": 10,
            "optim.schedule": "cosine",
            "optim.min_lr": 0.0,
            "train.batch_size": 4096,
            "train.epochs": 1000,
            **asymmetric(224),
        },
        "effective_lr": 4.8,
        "deviations": {
            "backbone.zero_init_residual": (False, None, "not stated in the paper; torchvision's init"),
            "optim.trust_coefficient": (0.001, None, "not stated in the paper; SimCLR's LARS eta"),
            "exclude_bias_norm": (True, None, "not stated in the paper; SimCLR's LARS excludes biases and BN"),
        },
    },
    "nnclr-cifar10": {
        "source": f"{SOLO} scripts/pretrain/cifar/nnclr.yaml (temperature 0.2, proj_hidden_dim 2048, "
        "pred_hidden_dim 4096, proj_output_dim 256, queue_size 65536, lars lr 0.4, wd 1e-5, eta 0.02, clip_lr, "
        "exclude_bias_n_norm, batch 256, 1000 epochs), solo/methods/nnclr.py:53-70 (projector with BN on its "
        "output, predictor), :150-152 (neighbour: largest dot product of normalized rows), :193-200 (the two "
        "directions averaged), :207 (z1 enqueued), solo/losses/nnclr.py:39-50 (eq. 1, gathered predictions as "
        f"negatives), augmentations/asymmetric.yaml; {SOLO_COMMON}",
        "values": {
            **CIFAR_MEAN_STD,
            "method.name": "nnclr",
            "method.temperature": 0.2,
            "method.proj_hidden_dim": 2048,
            "method.proj_out_dim": 256,
            "method.proj_layers": 3,
            "method.pred_hidden_dim": 4096,
            "method.queue_size": 65536,
            "backbone.name": "resnet18",
            "backbone.cifar_stem": True,
            "backbone.zero_init_residual": False,
            "optim.name": "lars",
            "optim.lr": 0.4,
            "optim.lr_scaling": "linear",
            "optim.trust_coefficient": 0.02,
            "optim.lars_clip": True,
            "optim.weight_decay": 1e-5,
            "optim.warmup_epochs": 10,
            "optim.warmup_start_lr": 3e-5,
            "optim.min_lr": 0.0,
            "train.batch_size": 256,
            "train.epochs": 1000,
            **asymmetric(32, blur=(0.0, 0.0)),
        },
        "effective_lr": 0.4,
        "exclude_bias_norm": True,
    },
    # ------------------------------------------------------------------ MAE
    "mae-vitb16-imagenet": {
        "source": f"{MAE} PRETRAIN.md:5-19 and :24 (--model mae_vit_base_patch16 --norm_pix_loss --mask_ratio 0.75 "
        "--epochs 800 --warmup_epochs 40 --blr 1.5e-4 --weight_decay 0.05, effective batch 64 x 64 = 4096); "
        "main_pretrain.py:123-127 (RandomResizedCrop(224, scale=(0.2, 1.0), interpolation=3: bicubic), flip, "
        "ImageNet mean/std), :165-166 (lr = blr x bs/256), :179-180 (timm add_weight_decay, AdamW betas "
        "(0.9, 0.95)); util/lr_sched.py:9-21 (linear warm-up from 0, half-cycle cosine to min_lr 0, per "
        "iteration); engine_pretrain.py:57-58 (no gradient clipping); models_mae.py:223-228 (ViT-B/16, decoder "
        "512 wide, 8 blocks, 16 heads), :37, :51, :65-93 (fixed sin-cos position embeddings, xavier init); "
        f"{TIMM_032} timm/optim/optim_factory.py:25-37 (no wd on 1-D parameters and biases only)",
        "values": {
            "method.name": "mae",
            "method.mask_ratio": 0.75,
            "method.decoder_embed_dim": 512,
            "method.decoder_depth": 8,
            "method.decoder_num_heads": 16,
            "method.norm_pix_loss": True,
            "backbone.name": "vit_base_patch16",
            "backbone.img_size": 224,
            "backbone.num_heads": 0,
            "backbone.depth": 0,
            "backbone.drop_path_rate": 0.0,
            "backbone.pos_embed": "sincos",
            "backbone.weight_init": "mae",
            "optim.name": "adamw",
            "optim.lr": 1.5e-4,
            "optim.lr_scaling": "linear",
            "optim.weight_decay": 0.05,
            "optim.betas": (0.9, 0.95),
            "optim.warmup_epochs": 40,
            "optim.warmup_start_lr": 0.0,
            "optim.schedule": "cosine",
            "optim.min_lr": 0.0,
            "optim.clip_grad": 0.0,
            "train.batch_size": 4096,
            "train.epochs": 800,
            "data.mean": (0.485, 0.456, 0.406),
            "data.std": (0.229, 0.224, 0.225),
            **views(0, count=1, size=224, scale=(0.2, 1.0), **NO_COLOUR),
        },
        "effective_lr": 2.4e-3,
        "exclude_bias_norm": True,
    },
    "mae-cifar10": {
        "source": f"{SOLO} scripts/pretrain/cifar/mae.yaml:16-26 (vit_small, patch_size 4, img_size 32; decoder "
        "512 / 8 blocks / 16 heads, mask_ratio 0.75, norm_pix_loss True), :33-42 (adamw, batch 256, lr 2e-4, "
        "wd 0.05, betas [0.9, 0.95], warmup_cosine), :51 (1000 epochs); augmentations/reconstruction.yaml (one "
        "32 px crop of scale 0.08-1, flip 0.5, no colour, blur or solarization); solo/backbones/vit/vit_mae.py:"
        "183-192 (vit_small: 384 wide, 12 blocks, 12 heads), :87-113 (sin-cos position embedding, MAE's init); "
        f"solo/methods/base.py:291-294 (warm-up 10 epochs from 3e-5, cosine to 0, per step); {SOLO_COMMON}",
        "values": {
            **CIFAR_MEAN_STD,
            "method.name": "mae",
            "method.mask_ratio": 0.75,
            "method.decoder_embed_dim": 512,
            "method.decoder_depth": 8,
            "method.decoder_num_heads": 16,
            "method.norm_pix_loss": True,
            "backbone.name": "vit_small_patch4",
            "backbone.img_size": 32,
            "backbone.num_heads": 12,
            "backbone.depth": 0,
            "backbone.pos_embed": "sincos",
            "backbone.weight_init": "mae",
            "optim.name": "adamw",
            "optim.lr": 2e-4,
            "optim.lr_scaling": "linear",
            "optim.weight_decay": 0.05,
            "optim.betas": (0.9, 0.95),
            "optim.warmup_epochs": 10,
            "optim.warmup_start_lr": 3e-5,
            "optim.min_lr": 0.0,
            "optim.clip_grad": 0.0,
            "train.batch_size": 256,
            "train.epochs": 1000,
            **views(0, count=1, size=32, scale=(0.08, 1.0), **NO_COLOUR),
        },
        "effective_lr": 2e-4,
        "deviations": {
            "exclude_bias_norm": (
                True,
                False,
                "solo-learn's AdamW decays every parameter (exclude_bias_n_norm_wd defaults to False, "
                "solo/methods/base.py:280-281); the official MAE does not decay 1-D parameters and biases "
                "(main_pretrain.py:179)",
            ),
        },
    },
    # ------------------------------------------------------------------ iBOT
    "ibot-vits16-imagenet": {
        "source": f"{IBOT} utils.py:29-48 (GaussianBlur: Pillow's untruncated blur); "
        "README.md:62-78 (vit_small, 16 GPUs: --teacher_temp 0.07 --warmup_teacher_temp_epochs 30 "
        "--norm_last_layer false --epochs 800 --batch_size_per_gpu 64 --shared_head true --out_dim 8192 "
        "--local_crops_number 10 --global_crops_scale 0.25 1 --local_crops_scale 0.05 0.25 --pred_ratio 0 0.3 "
        "--pred_ratio_var 0 0.2; 77.9% linear), main_ibot.py:36-150 (the other defaults: momentum 0.996, "
        "warmup_teacher_patch_temp 0.04, teacher_patch_temp 0.07, lambda1 = lambda2 = 1, lr 5e-4, wd 0.04 -> 0.4, "
        "clip_grad 3.0, freeze_last_layer 1, warmup 10, min_lr 1e-6, adamw, drop_path 0.1, pred_shape block), "
        ":305-310 (lr x bs/256), :574-621 (DataAugmentationiBOT), utils.py:154-163 (per-parameter clipping)",
        "values": {
            "method.name": "ibot",
            "method.out_dim": 8192,
            "method.shared_head": True,
            "method.norm_last_layer": False,
            "method.momentum": 0.996,
            "method.warmup_teacher_temp": 0.04,
            "method.teacher_temp": 0.07,
            "method.warmup_teacher_patch_temp": 0.04,
            "method.teacher_patch_temp": 0.07,
            "method.warmup_teacher_temp_epochs": 30,
            "method.student_temp": 0.1,
            "method.lambda1": 1.0,
            "method.lambda2": 1.0,
            "method.pred_ratio": [0.0, 0.3],
            "method.pred_ratio_var": [0.0, 0.2],
            "method.pred_shape": "block",
            "method.pred_start_epoch": 0,
            "method.freeze_last_layer_epochs": 1,
            "backbone.name": "vit_small_patch16",
            "backbone.drop_path_rate": 0.1,
            "optim.name": "adamw",
            "optim.lr": 5e-4,
            "optim.min_lr": 1e-6,
            "optim.warmup_epochs": 10,
            "optim.weight_decay": 0.04,
            "optim.weight_decay_end": 0.4,
            "optim.clip_grad": 3.0,
            "optim.clip_mode": "per_param",
            "train.batch_size": 1024,
            "train.epochs": 800,
            **views(
                0, count=1, size=224, scale=(0.25, 1.0), **BYOL_JITTER, blur_p=1.0, blur_kernel_frac=0.0, solarize_p=0.0
            ),
            **views(
                1, count=1, size=224, scale=(0.25, 1.0), **BYOL_JITTER, blur_p=0.1, blur_kernel_frac=0.0, solarize_p=0.2
            ),
            **views(
                2,
                count=10,
                size=96,
                scale=(0.05, 0.25),
                **BYOL_JITTER,
                blur_p=0.5,
                blur_kernel_frac=0.0,
                solarize_p=0.0,
            ),
        },
        "effective_lr": 2e-3,
        "exclude_bias_norm": True,
    },
    "ibot-cifar10": {
        "source": f"ibot-vits16-imagenet's recipe ({IBOT} README.md:62-78) at CIFAR's size: the paper and the "
        "official code have no CIFAR setting; a ViT-S/4 on 32 px as mae-cifar10, crops 224 / 96 -> 32 / 16 px, "
        "no blur at 32 px, batch 256",
        "values": {
            **CIFAR_MEAN_STD,
            "method.name": "ibot",
            "method.out_dim": 8192,
            "method.shared_head": True,
            "method.norm_last_layer": False,
            "method.teacher_temp": 0.07,
            "method.pred_ratio": [0.0, 0.3],
            "method.pred_ratio_var": [0.0, 0.2],
            "backbone.name": "vit_small_patch4",
            "backbone.img_size": 32,
            "backbone.drop_path_rate": 0.1,
            "optim.name": "adamw",
            "optim.lr": 5e-4,
            "optim.weight_decay": 0.04,
            "optim.weight_decay_end": 0.4,
            "optim.clip_grad": 3.0,
            "optim.clip_mode": "per_param",
            "train.batch_size": 256,
            "train.epochs": 800,
            **views(0, count=1, size=32, scale=(0.25, 1.0), **BYOL_JITTER, blur_p=0.0, solarize_p=0.0),
            **views(1, count=1, size=32, scale=(0.25, 1.0), **BYOL_JITTER, blur_p=0.0, solarize_p=0.2),
            **views(2, count=10, size=16, scale=(0.05, 0.25), **BYOL_JITTER, blur_p=0.0, solarize_p=0.0),
        },
        "effective_lr": 5e-4,
        "exclude_bias_norm": True,
    },
    # ------------------------------------------------------------------ DINOv2
    "dinov2-vits14-imagenet": {
        "source": f"{DINOV2} configs/train/vitl16_short.yaml (the ImageNet-1k recipe: ssl_default_config.yaml with "
        "batch_size_per_gpu 64; README.md:483-495: 32 GPUs, 82.9% linear with ViT-L/16), configs/"
        "ssl_default_config.yaml:44-116 (dino / ibot / koleo weights 1 / 1 / 0.1, mask_sample_probability 0.5, "
        "mask_ratio_min_max [0.1, 0.5], shared head 65,536 / 256 / 2048 / 3 layers, centering, drop_path_rate 0.3 "
        "uniform, layerscale 1e-5, momentum 0.992 -> 1, teacher temp 0.04 -> 0.07 over 30 epochs, base_lr 0.004 "
        "sqrt_wrt_1024, warmup 10, min_lr 1e-6, wd 0.04 -> 0.4, clip 3.0, freeze_last_layer 1, layerwise_decay 0.9, "
        "patch_embed_lr_mult 0.2, global crops 224 of 0.32-1, 8 local crops of 0.05-0.32), OFFICIAL_EPOCH_LENGTH "
        "1250 (epochs in passes over ImageNet-1k: x 1250 x 2048 / 1,281,167), configs/eval/vits14_pretrain.yaml "
        "(patch 14, 98 px local crops), data/transforms.py:17-21 (GaussianBlur(p) applies at 1 - p: 0.0 / 0.9 / "
        "0.5), train/train.py:113-119 (per-module clipping), utils/config.py:21-29 (lr x sqrt(bs / 1024))",
        "values": {
            "method.name": "dinov2",
            "method.out_dim": 65536,
            "method.hidden_dim": 2048,
            "method.bottleneck_dim": 256,
            "method.head_layers": 3,
            "method.norm_last_layer": False,
            "method.ibot_separate_head": False,
            "method.centering": "centering",
            "method.dino_loss_weight": 1.0,
            "method.ibot_loss_weight": 1.0,
            "method.koleo_loss_weight": 0.1,
            "method.mask_probability": 0.5,
            "method.mask_ratio_min_max": [0.1, 0.5],
            "method.momentum": 0.992,
            "method.momentum_end": 1.0,
            "method.warmup_teacher_temp": 0.04,
            "method.teacher_temp": 0.07,
            "method.warmup_teacher_temp_epochs": 60,
            "method.student_temp": 0.1,
            "method.center_momentum": 0.9,
            "method.freeze_last_layer_epochs": 2,
            "method.layer_decay": 0.9,
            "method.patch_embed_lr_mult": 0.2,
            "backbone.name": "vit_small_patch14",
            "backbone.layer_scale": 1e-5,
            "backbone.drop_path_rate": 0.3,
            "backbone.drop_path_uniform": True,
            "backbone.reg_tokens": 0,
            "optim.name": "adamw",
            "optim.betas": (0.9, 0.999),
            "optim.lr_scaling": "sqrt",
            "optim.min_lr": 1e-6,
            "optim.warmup_epochs": 20,
            "optim.weight_decay": 0.04,
            "optim.weight_decay_end": 0.4,
            "optim.clip_grad": 3.0,
            "optim.clip_mode": "per_module",
            "train.batch_size": 2048,
            "train.epochs": 200,
            **views(0, count=1, size=224, scale=(0.32, 1.0), **BYOL_JITTER, blur_p=0.0, solarize_p=0.0),
            **views(1, count=1, size=224, scale=(0.32, 1.0), **BYOL_JITTER, blur_p=0.9, solarize_p=0.2),
            **views(2, count=8, size=98, scale=(0.05, 0.32), **BYOL_JITTER, blur_p=0.5, solarize_p=0.0),
        },
        "effective_lr": 0.004 * math.sqrt(2048 / 1024),
        "exclude_bias_norm": True,
    },
    "dinov2-vitb14-imagenet": {
        "source": f"dinov2-vits14-imagenet's recipe with {DINOV2} models/vision_transformer.py vit_base (768 wide, "
        "12 blocks, 12 heads)",
        "values": {
            "method.name": "dinov2",
            "backbone.name": "vit_base_patch14",
            "backbone.layer_scale": 1e-5,
            "train.batch_size": 2048,
            "train.epochs": 200,
            "data.views.2.size": 98,
        },
        "effective_lr": 0.004 * math.sqrt(2048 / 1024),
        "exclude_bias_norm": True,
    },
    "dinov2-cifar10": {
        "source": f"dinov2-vits14-imagenet's recipe ({DINOV2} vitl16_short.yaml) at CIFAR's size: the paper and the "
        "official code have no CIFAR setting; a ViT-S/4 on 32 px as mae-cifar10, crops 224 / 98 -> 32 / 16 px, no "
        "blur at 32 px, batch 256 (lr 4e-3 x sqrt(256 / 1024))",
        "values": {
            **CIFAR_MEAN_STD,
            "method.name": "dinov2",
            "method.koleo_loss_weight": 0.1,
            "method.warmup_teacher_temp_epochs": 60,
            "method.freeze_last_layer_epochs": 2,
            "backbone.name": "vit_small_patch4",
            "backbone.img_size": 32,
            "backbone.layer_scale": 1e-5,
            "backbone.drop_path_rate": 0.3,
            "backbone.drop_path_uniform": True,
            "optim.name": "adamw",
            "optim.lr_scaling": "sqrt",
            "optim.warmup_epochs": 20,
            "optim.clip_mode": "per_module",
            "train.batch_size": 256,
            "train.epochs": 200,
            **views(0, count=1, size=32, scale=(0.32, 1.0), **BYOL_JITTER, blur_p=0.0, solarize_p=0.0),
            **views(1, count=1, size=32, scale=(0.32, 1.0), **BYOL_JITTER, blur_p=0.0, solarize_p=0.2),
            **views(2, count=8, size=16, scale=(0.05, 0.32), **BYOL_JITTER, blur_p=0.0, solarize_p=0.0),
        },
        "effective_lr": 0.004 * math.sqrt(256 / 1024),
        "exclude_bias_norm": True,
    },
}


# ---------------------------------------------------------------------------------------------


def lookup(cfg: Any, key: str) -> Any:
    """The value of dotted ``key`` in ``cfg``; ``exclude_bias_norm`` is the method class's attribute."""
    if key == "exclude_bias_norm":
        return METHODS.get(cfg.method.name).exclude_bias_norm
    obj = cfg
    for part in key.split("."):
        obj = obj[int(part)] if isinstance(obj, list | tuple) else getattr(obj, part)
    return obj


def same(got: Any, want: Any) -> bool:
    if want is None or isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, list | tuple):
        return isinstance(got, list | tuple) and len(got) == len(want) and all(map(same, got, want))
    if isinstance(want, int | float) and isinstance(got, int | float):
        return got == pytest.approx(want, rel=1e-9, abs=1e-12)
    return got == want


def test_every_preset_has_a_recipe_row():
    presets = set(list_presets())
    assert presets - set(RECIPES) == set(), "a preset without a row in RECIPES: add its recipe and source"
    assert set(RECIPES) - presets == set(), "a row in RECIPES for a preset that no longer exists"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_row_cites_a_source(name):
    row = RECIPES[name]
    assert isinstance(row.get("source"), str) and len(row["source"]) > 20
    assert set(row) <= {"source", "values", "effective_lr", "exclude_bias_norm", "deviations"}
    for key, dev in row.get("deviations", {}).items():
        assert len(dev) == 3 and isinstance(dev[2], str) and dev[2], f"{name}: deviation {key} needs a reason"
        assert key not in row["values"], f"{name}: {key} is both a recipe value and a deviation"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_preset_matches_its_recipe(name):
    row = RECIPES[name]
    cfg = load_config(name)
    wrong = []
    for key, want in row["values"].items():
        got = lookup(cfg, key)
        if not same(got, want):
            wrong.append(f"{key}: preset {got!r}, recipe {want!r}")
    if "exclude_bias_norm" in row:
        got = lookup(cfg, "exclude_bias_norm")
        if got is not row["exclude_bias_norm"]:
            wrong.append(f"exclude_bias_norm: method {got!r}, recipe {row['exclude_bias_norm']!r}")
    if "effective_lr" in row:
        got = scaled_lr(cfg.optim, cfg.train.batch_size)
        if got != pytest.approx(row["effective_lr"], rel=1e-9):
            wrong.append(f"effective peak lr: preset {got!r}, recipe {row['effective_lr']!r}")
    for key, (here, _, why) in row.get("deviations", {}).items():
        got = lookup(cfg, key)
        if not same(got, here):
            wrong.append(f"{key}: preset {got!r}, the table's documented deviation {here!r} ({why})")
    assert not wrong, f"{name} departs from {row['source']}:\n  " + "\n  ".join(wrong)
