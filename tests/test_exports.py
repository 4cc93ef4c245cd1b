"""Folder exports (selfsup export --format timm|torchvision): each loads in a fresh process, by the
lines its own model card shows, into the stock timm or torchvision model with selfsup's features."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from selfsup.app.runs import load_encoder
from selfsup.cli import main
from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.eval.export import export_encoder

pytest.importorskip("timm")

CASES = {
    # name: (preset, overrides, format)
    "r18-timm": ("simclr-imagenet", ["backbone.name=resnet18", "data.views.0.size=64"], "timm"),
    "vit-timm": ("mocov3-vits16-imagenet", ["backbone.img_size=32", "data.views.0.size=32"], "timm"),
    "r18-cifar-tv": ("simclr-cifar10", [], "torchvision"),
}


def _run_dir(tmp_path, name, preset, overrides):
    """A run directory as pretraining leaves it: the export and metrics.jsonl."""
    cfg = load_config(preset, overrides)
    from selfsup.backbones import backbone_from_config

    torch.manual_seed(0)
    encoder = backbone_from_config(cfg.backbone)
    with torch.no_grad():  # BN statistics that are not the identity, so they must travel too
        for m in encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    run = tmp_path / name
    run.mkdir()
    export_encoder(encoder, run / "backbone.safetensors", cfg.to_dict())
    recs = [{"step": 10, "epoch": 1.0, "loss": 3.25}, {"step": 10, "epoch": 1.0, "knn_top1": 0.4321, "knn_top5": 0.9}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return run, cfg


def _load_snippet(card: str) -> str:
    return card.split("## Load", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_timm_and_torchvision_folders_load_in_a_fresh_process_with_the_same_features(tmp_path, capsys):
    inputs, refs, snippets = {}, {}, {}
    for name, (preset, overrides, fmt) in CASES.items():
        run, cfg = _run_dir(tmp_path, name, preset, overrides)
        out = tmp_path / "exports" / name
        assert main(["export", "--weights", str(run), "--out", str(out), "--format", fmt]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["format"] == fmt
        card = (out / "README.md").read_text()
        assert "43.21%" in card and f"**{cfg.method.name}**" in card and "library_name:" in card
        size = cfg.data.views[0].size
        torch.manual_seed(1)
        inputs[name] = torch.randn(2, 3, size, size)
        encoder, _ = load_encoder(run)
        with torch.no_grad():
            refs[name] = encoder.eval()(inputs[name])
        snippets[name] = _load_snippet(card)
        config = json.loads((out / "config.json").read_text())
        mean = config["pretrained_cfg"]["mean"] if fmt == "timm" else config["mean"]
        assert mean == pytest.approx(list(cfg.data.mean))
    torch.save(inputs, tmp_path / "inputs.pt")
    # the card's own lines, run from the exports folder; then timm's data config and the features
    script = textwrap.dedent(
        """
        import os, sys, torch
        os.chdir(sys.argv[1] + "/exports")
        inputs, out = torch.load(sys.argv[1] + "/inputs.pt"), {}
        for name, code in SNIPPETS.items():
            scope = {}
            exec(code, scope)
            model = scope["model"].eval()
            with torch.no_grad():
                out[name] = model(inputs[name])
            if "stock" in scope:
                with torch.no_grad():
                    out[name + "/stock"] = scope["stock"].eval()(inputs[name])
                out[name + "/mean"] = torch.tensor(scope["cfg"]["mean"])
                out[name + "/stock-mean"] = torch.tensor(scope["stock"].pretrained_cfg["mean"])
        torch.save(out, sys.argv[1] + "/features.pt")
        """
    ).replace("SNIPPETS", repr(snippets))
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    got = torch.load(tmp_path / "features.pt")
    for name in CASES:
        torch.testing.assert_close(got[name], refs[name], rtol=1e-5, atol=1e-5)
        if CASES[name][2] == "timm":
            torch.testing.assert_close(got[name + "/stock"], refs[name], rtol=1e-5, atol=1e-5)
            mean = list(load_config(*CASES[name][:2]).data.mean)
            assert got[name + "/mean"].tolist() == pytest.approx(mean)
            assert got[name + "/stock-mean"].tolist() == pytest.approx(mean)


def test_architectures_a_format_cannot_express_are_errors_naming_the_way_out(tmp_path):
    from selfsup.app.exports import export_folder

    run, _ = _run_dir(tmp_path, "cifar", "simclr-cifar10", [])
    with pytest.raises(ConfigError, match=r"CIFAR stem has no timm architecture; export --format torchvision"):
        export_folder(run, tmp_path / "x", "timm")
    vit, _ = _run_dir(tmp_path, "vit", "mocov3-vits16-imagenet", ["backbone.img_size=32"])
    with pytest.raises(ConfigError, match=r"'vit_small_patch16' is not a torchvision model; export --format timm"):
        export_folder(vit, tmp_path / "y", "torchvision")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no half-written folder


@pytest.mark.parametrize("extra", [[], ["backbone.reg_tokens=4"], ["backbone.layer_scale=0"]])
def test_dinov2_vits_maps_to_timms_dinov2_architecture(extra):
    """LayerScale, registers and depth carry over: timm's model built from ``timm_spec`` takes the weights
    strictly and gives the same features."""
    import timm

    from selfsup.app.exports import timm_spec
    from selfsup.backbones import backbone_from_config
    from selfsup.config import load_config

    cfg = load_config("dinov2-vits14-imagenet", ["backbone.depth=2", "backbone.img_size=28", *extra])
    arch, args = timm_spec(cfg)
    assert arch == "vit_small_patch14_dinov2"
    ours = backbone_from_config(cfg.backbone).eval()
    plain = timm.create_model(arch, pretrained=False, num_classes=0, **args).eval()
    plain.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), ours(x))
