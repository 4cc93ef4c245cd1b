"""The selfsup command: list, a tiny pretrain, knn, ``--set`` in both forms, and bad input (one
line, exit code 2). One case runs ``python -m selfsup`` as a user would; the rest call
``selfsup.cli.main(argv)`` in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from selfsup.cli import _parser, main


def run(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-m", "selfsup", *args], capture_output=True, text=True, env=env, timeout=300)
    return p.returncode, p.stdout, p.stderr


def cli(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


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


def test_list(capsys):
    from selfsup.backbones import BACKBONES
    from selfsup.config import list_presets
    from selfsup.methods import METHODS

    code, out, _ = cli(capsys, "list")
    methods, backbones, presets, *names = out.splitlines()
    assert code == 0 and methods.split(None, 1)[1].split(", ") == METHODS.names()
    assert backbones.split(None, 1)[1].split(", ") == BACKBONES.names() and "resnet50" in BACKBONES.names()
    assert presets == "presets:" and [n.strip() for n in names] == list_presets() and "  simclr-cifar10" in names


def test_set_takes_several_pairs_or_repeated_flags():
    parse = _parser().parse_args
    pairs = parse(["pretrain", "simclr-cifar10", "--out", "x", "--set", "a=1", "b=2", "--resume"])
    flags = parse(["pretrain", "simclr-cifar10", "--set", "a=1", "--set", "b=2", "--out", "x", "--resume"])
    assert pairs.overrides == flags.overrides == ["a=1", "b=2"] and pairs.preset == flags.preset == "simclr-cifar10"
    mixed = parse(["demo", "--set", "a=1", "b=2", "--set", "c=3"])
    assert mixed.overrides == ["a=1", "b=2", "c=3"]
    assert (
        "PRESET --out RUN [--data DIR] [--set KEY=VALUE ...]"
        in _parser()._subparsers._group_actions[0].choices["pretrain"].format_usage()
    )  # the positional comes first: after --set it would be read as a pair


def test_pretrain_then_knn(image_tree, tmp_path, capsys):
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
    common = ["pretrain", "simclr-cifar10", "--data", str(image_tree / "train"), "--out", str(out_dir)]
    code, out, err = run(*common, "--set", *sets)  # the console entry point, all pairs after one --set
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["steps"] == 4 and summary["epochs"] == 2
    for f in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt", "backbone.safetensors"):
        assert (out_dir / f).is_file(), f
    assert "limit: 16" in (out_dir / "config.yaml").read_text()

    knn = ["knn", "--weights", out_dir, "--train", image_tree / "train", "--test", image_tree / "test"]
    code, out, err = cli(capsys, *knn, "--k", 5, "--num-workers", 0)
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["n_train"] == 24 and res["n_test"] == 8 and res["k"] == 5
    assert res["top1"] == 1.0  # two colours: trivially separable even for a barely trained net

    # the same run directory again without --resume is refused; with --resume and more epochs it continues
    repeated = [a for s in sets for a in ("--set", s)]
    code, _, err = cli(capsys, *common, *repeated)
    assert code == 2 and "--resume" in err
    sets[0] = "train.epochs=3"
    code, out, err = cli(capsys, *common, "--resume", *[a for s in sets for a in ("--set", s)])
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
        (["pretrain", "simclr-cifar10", "--out", "x", "--data", ".", "--set", "train.epochs=1", "x=1"], "'x'"),
        (["knn", "--weights", "/no/such/run", "--train", ".", "--test", "."], "/no/such/run"),
        (["knn", "--weights", "r", "--train", ".", "--test", ".", "--sweep", "--sweep-k", "5,x"], "5,x"),
        (["linear", "--weights", "r", "--train", ".", "--test", ".", "--optimizer", "adam"], "'adam'"),
        (["pretrain"], "required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_clear_line(args, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, *args)
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_all_images_unreadable_is_a_clear_error(tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.jpg").write_bytes(b"garbage")
    code, _, err = cli(capsys, "pretrain", "simclr-cifar10", "--data", d, "--out", tmp_path / "r")
    assert code == 2 and "none of the 3 images could be read" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_shards_packs_a_folder_and_bad_input_is_named(tmp_path, capsys):
    from selfsup.data.shards import ShardSource

    src = tmp_path / "imgs"
    for c in ("a", "b"):
        (src / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((6, 9, 3), 40 * i, dtype=np.uint8)).save(src / c / f"{i}.png")
    (src / "b" / "bad.png").write_bytes(b"nope")
    code, out, _ = cli(capsys, "shards", src, tmp_path / "sh", "--shard-size", 4, "--workers", 1)
    res = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and (res["samples"], res["shards"], res["skipped"]) == (6, 2, 1)
    sh = ShardSource(tmp_path / "sh")
    assert len(sh) == 6 and sh.classes == ["a", "b"] and (sh.load_array(4) == 40).all()
    code, _, err = cli(capsys, "shards", tmp_path / "missing", tmp_path / "sh2")
    assert code == 2 and "missing" in err and "Traceback" not in err
    code, _, err = cli(capsys, "shards", src, tmp_path / "sh3", "--shard-size", 0)
    assert code == 2 and "--shard-size" in err
