"""The selfsup command: list, a tiny pretrain, knn, and bad input (one line, exit code 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def run(*args, cwd=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run(
        [sys.executable, "-m", "selfsup", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for c, color in enumerate([(220, 30, 30), (30, 30, 220)]):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n // 2):
                a = rng.integers(0, 60, (20, 20, 3)).astype(np.uint8)
                a[5:15, 5:15] = color
                Image.fromarray(a).save(d / f"{i}.jpg")
    return root


def test_list():
    code, out, _ = run("list")
    assert code == 0 and "simclr" in out and "simclr-cifar10" in out and "resnet50" in out


def test_pretrain_then_knn(image_tree, tmp_path):
    out_dir = tmp_path / "run"
    sets = [
        "train.epochs=2",
        "train.batch_size=8",
        "data.limit=16",
        "data.num_workers=0",
        "backbone.name=resnet10",
        "backbone.cifar_stem=false",
        "data.views.0.size=16",
        "train.progress=false",
        "optim.warmup_epochs=0",
    ]
    code, out, err = run(
        "pretrain",
        "simclr-cifar10",
        "--data",
        str(image_tree / "train"),
        "--out",
        str(out_dir),
        *[a for s in sets for a in ("--set", s)],
    )
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["steps"] == 4 and summary["epochs"] == 2
    for f in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt", "backbone.safetensors"):
        assert (out_dir / f).is_file(), f
    assert "limit: 16" in (out_dir / "config.yaml").read_text()

    code, out, err = run(
        "knn",
        "--weights",
        str(out_dir),
        "--train",
        str(image_tree / "train"),
        "--test",
        str(image_tree / "test"),
        "--k",
        "5",
        "--num-workers",
        "0",
    )
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["n_train"] == 24 and res["n_test"] == 8 and res["k"] == 5
    assert res["top1"] == 1.0  # two colours: trivially separable even for a barely trained net

    # the same run directory again without --resume is refused; with --resume and more epochs it continues
    code, _, err = run(
        "pretrain",
        "simclr-cifar10",
        "--data",
        str(image_tree / "train"),
        "--out",
        str(out_dir),
        *[a for s in sets for a in ("--set", s)],
    )
    assert code == 2 and "--resume" in err
    sets[0] = "train.epochs=3"
    code, out, err = run(
        "pretrain",
        "simclr-cifar10",
        "--data",
        str(image_tree / "train"),
        "--out",
        str(out_dir),
        "--resume",
        *[a for s in sets for a in ("--set", s)],
    )
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["steps"] == 6


@pytest.mark.parametrize(
    "args,needle",
    [
        (["pretrain", "nope-preset", "--out", "x"], "unknown preset"),
        (["pretrain", "simclr-cifar10", "--out", "x", "--data", "/no/such/dir"], "/no/such/dir"),
        (["pretrain", "simclr-cifar10", "--out", "x", "--data", ".", "--set", "train.epochz=1"], "train.epochz"),
        (["pretrain", "simclr-cifar10", "--out", "x", "--data", ".", "--set", "train.epochs=many"], "train.epochs"),
        (["pretrain", "simclr-cifar10", "--out", "x", "--data", ".", "--set", "novalue"], "key=value"),
        (["knn", "--weights", "/no/such/run", "--train", ".", "--test", "."], "/no/such/run"),
        (["pretrain"], "required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_clear_line(args, needle, tmp_path):
    code, out, err = run(*args, cwd=tmp_path)
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_all_images_unreadable_is_a_clear_error(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.jpg").write_bytes(b"garbage")
    code, _, err = run("pretrain", "simclr-cifar10", "--data", str(d), "--out", str(tmp_path / "r"))
    assert code == 2 and "none of the 3 images could be read" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoints").exists()
