"""The training loop: checkpoints, metrics, divergence, resume checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from selfsup.app.pretrain import check_resume_config
from selfsup.app.runs import build_from_config
from selfsup.config import ConfigError, load_config
from selfsup.data import ViewDataset
from selfsup.errors import NonFiniteLossError
from selfsup.methods.simclr import SimCLR
from selfsup.train.checkpoint import load_checkpoint, save_checkpoint
from selfsup.train.logging import CollapseWatch
from selfsup.train.loop import fit

from _util import blob_images, tiny_config, tiny_dataset


class DivergesAt(SimCLR):
    """SimCLR whose loss becomes NaN from a given step on (a divergence on demand)."""

    at = 3

    def on_step(self, progress):
        self._step = progress.step

    def forward(self, views):
        out = super().forward(views)
        if self._step >= self.at:
            return out._replace(loss=out.loss * float("nan"))
        return out


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config("simclr", extra=["train.epochs=3", "train.log_every=1"])
    ds = tiny_dataset(cfg, 16)  # 2 steps per epoch: checkpoint at step 2, NaN from step 3
    method = DivergesAt(build_from_config(cfg).backbone, cfg.method)
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        fit(method, ds, cfg.optim, cfg.train, tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "backbone.safetensors").exists()


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(2)})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"step": 2, "bad": Boom()})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind


def test_checkpoint_never_executes_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(ValueError, match="not a readable selfsup checkpoint"):
        load_checkpoint(path)


def test_metrics_and_checkpoint_contents(tmp_path):
    cfg = tiny_config("simclr", extra=["train.epochs=2", "train.log_every=1"])
    res = fit(build_from_config(cfg), tiny_dataset(cfg, 16), cfg.optim, cfg.train, tmp_path, record=cfg.to_dict())
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert recs[0]["event"] == "start"
    steps = [r for r in recs if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all({"loss", "lr", "images_per_s", "z_std", "epoch"} <= r.keys() for r in steps)
    assert res.loss == steps[-1]["loss"]
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 4 and state["config"]["method"]["name"] == "simclr"
    assert {"model", "optimizer", "rng"} <= state.keys()


def test_resumed_metrics_have_no_duplicate_steps(tmp_path):
    cfg = tiny_config("simclr", extra=["train.epochs=2", "train.log_every=1"])
    ds = tiny_dataset(cfg, 16)
    fit(build_from_config(cfg), ds, cfg.optim, cfg.train, tmp_path, max_steps=2)
    with open(tmp_path / "metrics.jsonl", "a") as f:  # a record the dead run wrote after its checkpoint
        f.write(json.dumps({"step": 3, "loss": 1.0}) + '\n{"step": 4, "lo')
    fit(build_from_config(cfg), ds, cfg.optim, cfg.train, tmp_path, resume=True)
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [s for s in steps if s > 0]
    assert losses == [1, 2, 2, 3, 4]  # step 2: its metrics, then the resume marker; 3 logged once


def test_resume_refuses_a_different_config():
    cfg = load_config("simclr-cifar10")
    saved = cfg.to_dict()
    check_resume_config(saved, load_config("simclr-cifar10", ["train.epochs=2000"]))  # extending is fine
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        check_resume_config(saved, load_config("simclr-cifar10", ["optim.lr=0.1"]))


def test_batch_larger_than_dataset_is_a_clear_error(tmp_path):
    cfg = tiny_config("simclr", batch=32)
    with pytest.raises(ConfigError, match="larger than the dataset"):
        fit(build_from_config(cfg), tiny_dataset(cfg, 16), cfg.optim, cfg.train, tmp_path)


def test_collapse_watch_warns_once_after_a_sustained_window():
    w = CollapseWatch(0.1, 3)
    with pytest.warns(UserWarning, match="collapse"):
        fired = [w.update(v, i) for i, v in enumerate([0.05, 0.05, 0.5, 0.05, 0.05, 0.05, 0.01, 0.01])]
    assert fired == [False, False, False, False, False, True, False, False]


def test_knn_monitor_logs_during_pretraining(tmp_path):
    from selfsup.app.pretrain import pretrain

    cfg = load_config(
        "simclr-demo",
        [
            "data.limit=64",
            "train.batch_size=32",
            "train.epochs=2",
            "train.progress=false",
            "train.precision=fp32",
            "data.num_workers=0",
            "data.views.0.size=16",
            "knn.every=1",
            "knn.train=digits:train",
            "knn.test=digits:test",
            "knn.limit_train=200",
            "knn.limit_test=50",
            "knn.k=5",
        ],
    )
    pretrain(cfg, tmp_path)
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    knn = [r for r in recs if "knn_top1" in r]
    assert [r["step"] for r in knn] == [2, 4]  # after each epoch of 2 steps
    assert all(0.1 < r["knn_top1"] <= 1.0 and r["knn_top5"] >= r["knn_top1"] for r in knn)


def test_resident_batches_equal_the_dataloaders_and_resume_bit_exactly(tmp_path):
    """Raw in-memory images are indexed where they live (no DataLoader): the same batches, in the same
    order, as the DataLoader over the same sampler; a run stopped mid-epoch and resumed equals one straight
    run, and both equal the DataLoader path's run to the last bit."""
    from torch.utils.data import DataLoader

    from selfsup.data import BatchedViews, EpochSampler, collate
    from selfsup.data.dataset import ResidentBatches
    from selfsup.train.engine import rank_loader

    cfg = tiny_config("simclr", extra=["train.epochs=2"])
    src = blob_images(26, size=16)

    def dataset(resident: bool) -> ViewDataset:
        ds = ViewDataset(src, [], np.arange(3, 23))  # a subset: positions are not source indices
        ds.batch_augment, ds.resident = BatchedViews(cfg.data.views, cfg.data.mean, cfg.data.std), resident
        return ds

    cpu = torch.device("cpu")
    sampler = EpochSampler(20, 4, seed=3, rank=1, world=2)  # 5 steps an epoch, 2 samples each per rank
    sampler.set_position(1, 1)
    ref = list(DataLoader(dataset(False), batch_size=4, sampler=sampler, collate_fn=collate))
    got = list(ResidentBatches(dataset(True), sampler, 4, cpu))
    assert len(got) == len(ref) == 2
    for a, b in zip(ref, got):
        assert torch.equal(a["views"][0], b["views"][0]) and torch.equal(a["labels"], b["labels"])
    assert isinstance(rank_loader(dataset(True), sampler, 4, 0, cpu, 0), ResidentBatches)
    assert isinstance(rank_loader(dataset(False), sampler, 4, 0, cpu, 0), DataLoader)

    def run(resident: bool, out, **kw):
        method = build_from_config(cfg)
        fit(method, dataset(resident), cfg.optim, cfg.train, out, record=cfg.to_dict(), **kw)
        return method.state_dict()

    loader = run(False, tmp_path / "loader")
    straight = run(True, tmp_path / "straight")
    run(True, tmp_path / "resumed", max_steps=3)  # 2 steps per epoch: stopped mid-epoch 2
    resumed = run(True, tmp_path / "resumed", resume=True)
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), f"{k} differs after resume"
        assert torch.equal(straight[k], loader[k]), f"{k} differs from the DataLoader path"
