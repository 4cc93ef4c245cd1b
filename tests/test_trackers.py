"""Experiment trackers (train.loggers): W&B offline and MLflow on a local file store get what
metrics.jsonl gets, the config and the exported backbone, read back through their own files and client."""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path

import pytest

from selfsup.app.pretrain import pretrain
from selfsup.errors import ConfigError
from selfsup.train.logging import MetricsLogger, read_metrics

from _util import tiny_config

DATA = [
    "data.source=digits",
    "data.limit=32",
    "train.epochs=2",
    "knn.every=1",
    "knn.train=digits:train",
    "knn.test=digits:test",
    "knn.limit_train=64",
    "knn.limit_test=32",
    "knn.k=5",
]


def _entries(run: Path) -> list[tuple[int, str, float]]:
    """(step, key, value) of every numeric entry of metrics.jsonl's step records."""
    return [
        (r["step"], k, float(v))
        for r in read_metrics(run)
        if "step" in r and "event" not in r
        for k, v in r.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    ]


def _scalars(run: Path) -> dict[tuple[int, str], float]:
    """(step, key) -> value: what a step-keyed tracker (W&B) holds."""
    return {(s, k): v for s, k, v in _entries(run)}


def _wandb_records(path: Path):
    """The records of a ``.wandb`` file: a 7-byte file header, then LevelDB-log chunks (crc32, length,
    type; FULL=1, FIRST=2, MIDDLE=3, LAST=4) in 32 KiB blocks, each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if n == 0 and kind == 0:  # block padding
            pos += left - 7
            continue
        if pos + n > len(data):
            return  # a chunk still being written
        chunk, pos = data[pos : pos + n], pos + n
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


def test_wandb_offline_run_gets_the_metrics_config_and_export(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_PROJECT", "selfsup-test")
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    cfg = tiny_config("simclr", extra=[*DATA, "train.loggers=[jsonl,wandb]"])
    pretrain(cfg, tmp_path / "run")
    run_id = (tmp_path / "run" / "wandb-run-id").read_text().strip()
    (file,) = (tmp_path / "wb" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    # W&B's service process writes the file on its own; under load it can still be writing when
    # finish() returns: wait (up to a minute) for its exit record
    deadline = time.monotonic() + 60
    while not any(r.WhichOneof("record_type") == "exit" for r in _wandb_records(file)):
        assert time.monotonic() < deadline, f"{file} has no exit record after 60 s"
        time.sleep(0.5)
    history: dict[tuple[int, str], float] = {}
    config, artifacts, project = {}, [], None
    for rec in _wandb_records(file):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            step = int(items.pop("_step", rec.history.step.num))
            history.update({(step, k): float(v) for k, v in items.items() if not k.startswith("_")})
        elif kind == "run":
            project = rec.run.project
            config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "artifact":
            artifacts.append((rec.artifact.type, [m.path for m in rec.artifact.manifest.contents]))
    expected = _scalars(tmp_path / "run")
    assert history == pytest.approx(expected) and any(k == "knn_top1" for _, k in expected)
    assert project == "selfsup-test"
    assert config["method"]["name"] == "simclr" and config["train"]["epochs"] == 2
    assert artifacts == [("model", ["backbone.safetensors"])]


def test_mlflow_file_store_gets_the_metrics_params_and_export_and_a_resume_continues_the_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "ssl")
    cfg = tiny_config("simclr", extra=[*DATA, "train.loggers=[jsonl,mlflow]"])
    pretrain(cfg, tmp_path / "run", max_steps=4)  # the first epoch, then a stop
    pretrain(cfg, tmp_path / "run", resume=True)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("ssl")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == (tmp_path / "run" / "mlflow-run-id").read_text().strip()
    run = runs[0]
    assert run.info.status == "FINISHED"
    # every entry once (the kNN record repeats its step's epoch, as metrics.jsonl does; nothing twice
    # from the resume)
    got = sorted((m.step, k, m.value) for k in run.data.metrics for m in client.get_metric_history(run.info.run_id, k))
    expected = sorted(_entries(tmp_path / "run"))
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    assert [g[2] for g in got] == pytest.approx([e[2] for e in expected])
    assert {s for s, k, _ in expected if k == "knn_top1"} == {4, 8}
    assert run.data.params["method.name"] == "simclr" and run.data.params["train.batch_size"] == "8"
    assert run.data.params["data.views.0.size"] == str(cfg.data.views[0].size)
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert files == {"config.json", "backbone.safetensors"}
    local = Path(client.download_artifacts(run.info.run_id, "config.json", str(tmp_path / "dl")))
    assert json.loads(local.read_text())["method"]["name"] == "simclr"


def test_a_missing_tracker_package_names_the_extra_and_jsonl_is_required(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "selfsup\[wandb\]"'):
        MetricsLogger(tmp_path, loggers=["jsonl", "wandb"])
    with pytest.raises(ConfigError, match=r"must include jsonl"):
        MetricsLogger(tmp_path, loggers=["tensorboard"])
    with pytest.raises(ConfigError, match=r"train\.loggers\.1: 'neptune' is not one of"):
        tiny_config("simclr", extra=["train.loggers=[jsonl,neptune]"])
    assert MetricsLogger(tmp_path, enabled=False, loggers=["jsonl", "wandb"]).trackers == []  # not rank 0
