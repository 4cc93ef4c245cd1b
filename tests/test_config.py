"""Typed config: presets, overrides, unknown keys and wrong types rejected with the key named."""

from __future__ import annotations

import pytest
import torch

from selfsup.config import ConfigError, dump_config, list_presets, load_config


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_round_trips_through_its_resolved_yaml(preset, tmp_path):
    """The config.yaml a run writes, loaded as a preset, gives back exactly the resolved config."""
    cfg = load_config(preset)
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(str(path)) == cfg


def test_simclr_imagenet_holds_the_paper_hyperparameters():
    cfg = load_config("simclr-imagenet")
    assert cfg.backbone.name == "resnet50"
    assert (cfg.train.batch_size, cfg.optim.name, cfg.optim.lr, cfg.optim.lr_scaling) == (4096, "lars", 0.3, "linear")
    assert cfg.optim.weight_decay == 1e-6 and cfg.method.temperature == 0.1 and cfg.train.epochs >= 100
    v = cfg.data.views[0]
    assert v.count == 2 and v.size == 224 and v.blur_p == 0.5 and v.scale == (0.08, 1.0)
    assert (v.brightness, v.contrast, v.saturation, v.hue) == (0.8, 0.8, 0.8, 0.2)


def test_simclr_cifar10_preset():
    cfg = load_config("simclr-cifar10")
    assert cfg.backbone.name == "resnet18" and cfg.backbone.cifar_stem
    v = cfg.data.views[0]
    assert v.size == 32 and v.blur_p == 0.0 and v.brightness == 0.4
    assert cfg.method.temperature == 0.5


def test_overrides_are_typed_and_reach_lists():
    cfg = load_config(
        "simclr-cifar10",
        [
            "train.epochs=3",
            "optim.lr=0.5",
            "data.views.0.size=24",
            "data.views.0.scale=[0.2, 1.0]",
            "train.compile=true",
            "optim.min_lr=1e-6",
        ],
    )
    assert cfg.train.epochs == 3 and cfg.optim.lr == 0.5 and cfg.data.views[0].size == 24
    assert cfg.data.views[0].scale == (0.2, 1.0) and cfg.train.compile is True and cfg.optim.min_lr == 1e-6


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epochz=3", "train.epochz"),
        ("train.epochs=abc", "train.epochs"),
        ("train.epochs=1.5", "train.epochs"),
        ("optim.name=adam", "optim.name"),
        ("data.views.3.size=2", "data.views.3.size"),
        ("data.views.0.scale=[1]", "data.views.0.scale"),
        ("method.temprature=0.1", "method.temprature"),
        ("method.name=nope", "nope"),
        ("train", "key=value"),
        ("data.views.0.mean=[0.5, 0.5, 0.5]", "set data.mean"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config("simclr-cifar10", [override])


def test_unknown_key_in_a_preset_file_names_the_file(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("base: simclr-cifar10\ntrain: {epochs: 2, bogus: 1}\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml.*train\.bogus"):
        load_config(str(p))
    p.write_text("base: simclr-cifar10\ntrain: {epochs: 2}\n")
    cfg = load_config(str(p))
    assert cfg.train.epochs == 2 and cfg.backbone.cifar_stem  # inherited from the base preset


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("nope-nope")
    p = tmp_path / "bad.yaml"
    p.write_text("train: [\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(str(p))


def test_normalization_is_the_datasets_and_old_records_read_as_such(tmp_path):
    """``data.mean``/``data.std`` normalize every view and evaluation; a record written when each view
    held them (``data.views.N.mean``) reads back with the same statistics, and unequal ones are refused."""
    from selfsup.app.runs import config_from_record
    from selfsup.data import pretrain_dataset

    cfg = load_config("simclr-cifar10", ["data.source=digits", "data.mean=[0.2, 0.3, 0.4]", "data.std=[0.5, 0.5, 0.5]"])
    assert cfg.data.mean == (0.2, 0.3, 0.4)
    batched = pretrain_dataset(cfg.data, "cuda").batch_augment  # digits are in memory: batched views
    assert batched.mean == (0.2, 0.3, 0.4) and batched.std == (0.5, 0.5, 0.5)
    fast = pretrain_dataset(cfg.data, "cpu").views  # the CPU's OpenCV views: x / 255 * scale + bias
    assert torch.allclose(fast.scale.flatten() * 255, 1 / torch.tensor([0.5, 0.5, 0.5]))
    assert torch.allclose(fast.bias.flatten(), -torch.tensor([0.2, 0.3, 0.4]) / 0.5)
    cfg.data.augment = "pil"
    view = pretrain_dataset(cfg.data).transforms[0].transforms[-1]  # torchvision's Normalize, last
    assert list(view.mean) == [0.2, 0.3, 0.4] and list(view.std) == [0.5, 0.5, 0.5]
    cfg.data.augment = "auto"
    record = cfg.to_dict()
    old = {**record, "data": {k: v for k, v in record["data"].items() if k not in ("mean", "std")}}
    old["data"]["views"] = [{**v, "mean": [0.2, 0.3, 0.4], "std": [0.5, 0.5, 0.5]} for v in record["data"]["views"]]
    assert config_from_record(old, "run.json").to_dict() == record
    old["data"]["views"].append({**old["data"]["views"][0], "mean": [0.1, 0.1, 0.1]})
    with pytest.raises(ConfigError, match=r"run\.json: data\.views hold different mean"):
        config_from_record(old, "run.json")
