"""Pretrained starts (backbone.weights, backbone.pretrained): another library's state dict matched to the
backbone's keys, targets copied after the start, provenance in checkpoints and exports."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import save_file

from selfsup.app.pretrain import pretrain
from selfsup.app.runs import build_for_training, load_encoder, start_record
from selfsup.backbones import build_backbone
from selfsup.backbones.weights import WeightsError, find_prefix, match_state_dict
from selfsup.eval.export import export_encoder

from _util import tiny_config


def _resnet10_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_backbone("resnet10").state_dict()


def test_find_prefix_takes_the_prefix_holding_most_keys_and_the_shortest_on_ties():
    target = {"conv1.weight": 0, "bn1.weight": 0, "fc.weight": 0}
    moco = {f"module.encoder_{q}.{k}": 0 for q in "qk" for k in ("conv1.weight", "bn1.weight")}
    assert find_prefix(moco, target) == "module.encoder_q."  # tie with encoder_k: the first in the file
    assert find_prefix({"conv1.weight": 0, "bn1.weight": 0}, target) == ""
    # a nested key that also ends in a target key does not win over the prefix of all of them
    src = {"backbone.conv1.weight": 0, "backbone.bn1.weight": 0, "head.fc.weight": 0}
    assert find_prefix(src, target) == "backbone."


def test_a_moco_style_checkpoint_starts_every_tensor_of_the_backbone(tmp_path):
    """{"state_dict": {"module.encoder_q.*", "module.encoder_k.*", "module.queue"}} as the official MoCo
    writes it: the query encoder's tensors land in the backbone, and every target copy (BYOL's) equals them."""
    q, k = _resnet10_state(1), _resnet10_state(2)
    sd = {**{f"module.encoder_q.{n}": v for n, v in q.items()}, **{f"module.encoder_k.{n}": v for n, v in k.items()}}
    sd["module.encoder_q.fc.weight"] = torch.zeros(10, 512)  # a classifier the backbone has no place for
    sd["module.queue"] = torch.randn(128, 16)
    path = tmp_path / "moco.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet10", "state_dict": sd}, path)
    cfg = tiny_config("byol", extra=[f"backbone.weights={path}"])
    method, start = build_for_training(cfg)
    for name, ref in q.items():
        assert torch.equal(method.backbone.state_dict()[name], ref), name
        assert torch.equal(method.target_backbone.state_dict()[name], ref), name
    assert start is not None
    assert start["prefix"] == "module.encoder_q." and start["loaded"] == len(q)
    assert start["ignored"] == len(sd) - len(q)  # encoder_k, fc and queue
    assert start["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # the heads are the ones a random start draws (same seed, same order)
    ref_method, none = build_for_training(tiny_config("byol"))
    assert none is None
    assert torch.equal(ref_method.predictor[0].weight, method.predictor[0].weight)
    assert not torch.equal(ref_method.backbone.conv1.weight, method.backbone.conv1.weight)


def test_a_shape_mismatch_names_the_first_bad_key_and_the_stem_option(tmp_path):
    path = tmp_path / "r10.safetensors"
    save_file(_resnet10_state(0), str(path))  # ImageNet stem: conv1 is 7x7
    cfg = tiny_config("simclr", extra=[f"backbone.weights={path}", "backbone.cifar_stem=true"])
    with pytest.raises(WeightsError, match=r"'conv1\.weight' has shape \(64, 3, 7, 7\).*\(64, 3, 3, 3\).*cifar_stem"):
        build_for_training(cfg)


def test_a_missing_key_and_unreadable_files_are_errors_naming_the_file(tmp_path):
    state = _resnet10_state(0)
    del state["layer4.0.bn2.running_var"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"partial\.pt.*'layer4\.0\.bn2\.running_var'"):
        build_for_training(tiny_config("simclr", extra=[f"backbone.weights={path}"]))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match=r"bad\.pth is not a readable state dict"):
        build_for_training(tiny_config("simclr", extra=[f"backbone.weights={bad}"]))
    with pytest.raises(FileNotFoundError, match=r"backbone\.weights: .*missing\.pt not found"):
        build_for_training(tiny_config("simclr", extra=[f"backbone.weights={tmp_path / 'missing.pt'}"]))


def test_torchvision_published_weights_load_from_its_cache_with_fc_left_out(tmp_path, monkeypatch):
    """``backbone.pretrained=true``: torchvision's DEFAULT weights file (here a stand-in placed in the cache
    TORCH_HOME points to, as a download leaves it), its 1000-class fc ignored."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(3)
    reference = torchvision.models.resnet18()
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1])
    cfg = tiny_config("simclr", extra=["backbone.name=resnet18", "backbone.pretrained=true"])
    method, start = build_for_training(cfg)
    assert start is not None and start["source"] == f"torchvision:{url}" and start["ignored"] == 2  # fc
    reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(method.backbone.eval()(x), reference.eval()(x), rtol=0, atol=0)
    with pytest.raises(WeightsError, match=r"no published weights for backbone 'resnet10'"):
        build_for_training(tiny_config("simclr", extra=["backbone.pretrained=true"]))
    with pytest.raises(Exception, match=r"both name a start"):
        build_for_training(tiny_config("simclr", extra=["backbone.pretrained=true", "backbone.weights=x.pt"]))


def test_a_timm_vit_state_dict_loads_with_its_classifier_ignored(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224", num_classes=10, img_size=32)
    path = tmp_path / "vit.pth"
    torch.save({"model": vit.state_dict()}, path)
    backbone = build_backbone("vit_small_patch16", img_size=32)
    state, info = match_state_dict(backbone, torch.load(path)["model"], str(path))
    assert info["prefix"] == "" and info["ignored"] == ["head.bias", "head.weight"]
    backbone.load_state_dict(state)
    vit.reset_classifier(0)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(backbone.eval()(x), vit.eval()(x), rtol=0, atol=0)


def test_continued_pretraining_records_its_start_and_resumes_without_the_file(tmp_path):
    """A run started from an export: the checkpoint and the export record the start (file, sha256); the
    run resumes from its checkpoint even after the starting file is gone, and keeps the record."""
    encoder = build_backbone("resnet10")
    start_file = tmp_path / "start.safetensors"
    export_encoder(encoder, start_file, tiny_config("simclr").to_dict())
    digest = hashlib.sha256(start_file.read_bytes()).hexdigest()
    data = ["data.source=digits", "data.limit=32", "train.epochs=2", "knn.every=0"]
    cfg = tiny_config("simclr", extra=[*data, f"backbone.weights={start_file}"])
    pretrain(cfg, tmp_path / "run", max_steps=4)  # stopped after the first epoch's 4 steps
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["start"]["source"] == f"selfsup export {start_file}" and saved["start"]["sha256"] == digest
    start_file.unlink()
    pretrain(cfg, tmp_path / "run", resume=True)
    rec = start_record(tmp_path / "run")
    assert rec is not None and rec["sha256"] == digest and rec["loaded"] == len(encoder.state_dict())
    with safe_open(str(tmp_path / "run" / "backbone.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["start"]) == rec
    # a run directory is itself a start: its evaluated encoder
    cfg2 = tiny_config("simclr", extra=[f"backbone.weights={tmp_path / 'run'}"])
    method, start2 = build_for_training(cfg2)
    trained, _ = load_encoder(tmp_path / "run")
    for k, v in trained.state_dict().items():
        assert torch.equal(method.backbone.state_dict()[k], v), k
    assert start2 is not None and start2["source"].startswith("selfsup run")
