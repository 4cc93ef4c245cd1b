"""benchmarks/gpu_check.py --smoke: every phase of the GPU readiness check on the CPU, and its report's values.

The expectations (which items, which methods have EMA targets or queues) are derived here from the
registry and the presets, not read from the report, so an item the check drops or a target that stops
moving fails a test. One smoke run takes about 35-55 s on 2 busy cores, hence the slow mark.
"""

from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from selfsup import build_from_config
from selfsup.config import list_presets, load_config
from selfsup.methods import METHODS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"

pytestmark = pytest.mark.slow


def _run(out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), *extra], capture_output=True, text=True, timeout=600
    )
    path = out / "gpu_check.json"
    assert path.is_file(), f"no report written:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, json.loads(path.read_text())


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    return _run(tmp_path_factory.mktemp("gpu_check"))


@pytest.fixture(scope="module")
def report(smoke) -> dict:
    proc, rep = smoke
    assert proc.returncode == 0, f"gpu_check --smoke failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return rep


@functools.cache
def _vit_presets() -> list[str]:
    return [p for p in list_presets() if load_config(p).backbone.name.startswith("vit")]


@pytest.fixture(scope="module")
def declared() -> dict[str, tuple[bool, bool]]:
    """method -> (has EMA pairs, has a queue buffer), from a narrow build of its CIFAR-10 preset."""
    out = {}
    for m in METHODS.names():
        cfg = load_config(f"{m}-cifar10")
        narrow = ["backbone.width=8"] if cfg.backbone.name.startswith("resnet") else ["backbone.depth=1"]
        method = build_from_config(load_config(f"{m}-cifar10", narrow))
        queue = any("queue" in n.rsplit(".", 1)[-1] and b.is_floating_point() for n, b in method.named_buffers())
        out[m] = (bool(method.ema_pairs()), queue)
    return out


def test_the_item_list_is_every_method_the_compiled_run_and_every_vit_preset(report):
    want = sorted({*(f"{m}-cifar10" for m in METHODS.names()), "simclr-cifar10+compile", *_vit_presets()})
    names = [r["name"] for r in report["items"]]
    assert sorted(names) == sorted(want)
    assert report["expected_items"] == names and report["items_complete"] is True
    assert not [r["name"] for r in report["items"] if r.get("skipped")]


def test_every_item_trains_with_a_finite_loss(report):
    for r in report["items"]:
        assert r["ok"] is True, f"{r['name']}: {r.get('error') or r}"
        assert isinstance(r["loss"], float) and math.isfinite(r["loss"]), r["name"]
        assert r["steps"] == report["settings"]["steps"] == 2
        assert r["steps_per_s"] > 0 and r["images_per_s"] > 0
    vits = [r for r in report["items"] if r["preset"] in _vit_presets()]
    size = report["settings"]["vit_size"]
    for r in vits:  # the largest view at --vit-size, rounded to whole patches (ViT-S/14: 28 for 32)
        patch = int(load_config(r["preset"]).backbone.name.rsplit("patch", 1)[1])
        assert max(r["view_sizes"]) == max(patch, round(size / patch) * patch), r["name"]
    assert vits


def test_ema_targets_and_queues_moved_where_the_method_has_them(report, declared):
    assert any(e for e, _ in declared.values()) and any(q for _, q in declared.values())  # not vacuous
    for r in report["items"]:
        has_ema, has_queue = declared[load_config(r["preset"]).method.name]
        assert (r["ema"] is not None) == has_ema, r["name"]
        assert (r["queue"] is not None) == has_queue, r["name"]
        if has_ema:
            assert r["ema"]["moved"] is True and r["ema"]["max_abs_change"] > 0, r["name"]
        if has_queue:
            assert r["queue"]["moved"] is True and r["queue"]["buffers"], r["name"]


def test_compiled_against_eager_and_the_throughput_ratio(report):
    c = report["compile"]
    assert c["eager_steps_per_s"] > 0 and c["compiled_steps_per_s"] > 0
    assert c["speedup"] == pytest.approx(c["compiled_steps_per_s"] / c["eager_steps_per_s"], rel=1e-2)
    t = report["throughput"]
    assert t["ok"] is True and t["full_step"]["ok"] is True
    assert t["full_step_images_per_s"] > 0 and t["model_only_images_per_s"] > 0
    assert t["ratio"] == pytest.approx(t["full_step_images_per_s"] / t["model_only_images_per_s"], rel=1e-2)


def test_the_sprint_trains_its_preset_and_reports_knn(report):
    s = report["sprint"]
    assert s["ok"] is True, s.get("error")
    assert s["preset"] == "simclr-cifar10-sprint" and s["epochs"] == s["epochs_done"] == 1
    assert s["steps"] == s["train_images"] // s["batch_size"] and s["stopped_early"] is False
    assert isinstance(s["knn_top1"], float) and 0.0 <= s["knn_top1"] <= 1.0
    assert s["knn"]["k"] == 200 and s["knn"]["temperature"] == 0.1
    assert s["knn"]["bank"] == s["train_images"] == 64 and s["knn"]["queries"] == s["test_images"] == 64
    assert s["calibration"]["ok"] is True


def test_the_summary_ends_with_no_failures(smoke, report):
    last = smoke[0].stdout.strip().splitlines()[-1]
    assert last.startswith("0 failure(s)") and "items complete: True" in last
    assert report["failures"] == []


def test_a_failing_item_is_recorded_and_the_check_goes_on(tmp_path):
    # a batch larger than the 64 images: the loop refuses it, for each item on its own
    proc, rep = _run(tmp_path, "--phases", "items", "--items", "^(simclr|byol)-cifar10$", "--max-batch", "1024")
    assert proc.returncode == 1
    assert [r["name"] for r in rep["items"]] == ["simclr-cifar10", "byol-cifar10"]
    assert all(r["ok"] is False and "batch_size" in r["error"] for r in rep["items"])
    assert rep["failures"] == ["simclr-cifar10", "byol-cifar10"]
