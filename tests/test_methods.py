"""Tests every registered method gets, parametrized over the registry (no edits to add a method)."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.app.runs import build_from_config
from selfsup.methods import METHODS, Method, StepOutput
from selfsup.train.loop import fit

from _util import registered_methods, tiny_config, tiny_dataset, tiny_views

METHOD_NAMES = registered_methods()


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_forward_returns_finite_loss_and_gradients_on_online_side_only(name):
    cfg = tiny_config(name)
    method = build_from_config(cfg)
    assert isinstance(method, Method) and type(method) is METHODS.get(name)
    out = method(tiny_views(cfg))
    assert isinstance(out, StepOutput)
    assert out.loss.ndim == 0 and math.isfinite(out.loss.item())
    for k, v in out.logs.items():
        assert torch.as_tensor(v).numel() == 1, k
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.backbone.parameters())
    for _online, target in method.ema_pairs():
        for p in target.parameters():
            assert not p.requires_grad and p.grad is None, "target networks never receive gradients"


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_training_steps_move_weights_and_ema_targets(name, tmp_path):
    cfg = tiny_config(name)
    method = build_from_config(cfg)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    pairs_before = [[p.clone() for p in t.parameters()] for _, t in method.ema_pairs()]
    res = fit(method, tiny_dataset(cfg, 16), cfg.optim, cfg.train, tmp_path, record=cfg.to_dict())
    assert res.steps == 2 and math.isfinite(res.loss)
    changed = [k for k, v in method.backbone.state_dict().items() if not torch.equal(v, before[f"backbone.{k}"])]
    assert changed, "the backbone did not train"
    for (_, target), old in zip(method.ema_pairs(), pairs_before):
        assert any(not torch.equal(p, o) for p, o in zip(target.parameters(), old)), "EMA target did not move"
    assert (tmp_path / "backbone.safetensors").is_file()


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_resume_is_bit_identical(name, tmp_path):
    """Two steps straight equal one step, a checkpoint, a fresh process-like rebuild and one more."""
    cfg = tiny_config(name, extra=["train.epochs=2"])
    ds = tiny_dataset(cfg, 16)

    straight = build_from_config(cfg)
    fit(straight, ds, cfg.optim, cfg.train, tmp_path / "a", record=cfg.to_dict())

    first = build_from_config(cfg)
    fit(first, ds, cfg.optim, cfg.train, tmp_path / "b", record=cfg.to_dict(), max_steps=3)
    resumed = build_from_config(cfg)
    res = fit(resumed, ds, cfg.optim, cfg.train, tmp_path / "b", record=cfg.to_dict(), resume=True)
    assert res.steps == 4
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if METHODS.get(n).num_views is not None])
def test_a_wrong_number_of_views_is_an_error_naming_the_count(name):
    cfg = tiny_config(name)
    method = build_from_config(cfg)
    views = tiny_views(cfg)
    n = METHODS.get(name).num_views
    with pytest.raises(ValueError, match=f"takes {n} views, got {n + 1}"):
        method([*views, views[0]])
