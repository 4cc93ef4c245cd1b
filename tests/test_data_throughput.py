"""benchmarks/data_throughput.py --smoke: every path runs, on both methods' views, and gives the same views."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from selfsup.config import load_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "data_throughput.py"
PATHS = ["pil", "opencv", "shards", "folder-batched"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("bench-jpegs")
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--work", str(work)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("method,preset", [("simclr", "simclr-imagenet"), ("dino", "dino-vits16-imagenet")])
def test_every_path_gives_the_presets_views(report, method, preset):
    views = load_config(preset).data.views
    big = max(v.size for v in views)
    size = report["settings"]["size"]
    expected = [[report["settings"]["batch"], 3, round(v.size * size / big)] for v in views for _ in range(v.count)]
    paths = report["methods"][method]["paths"]
    assert sorted(paths) == sorted(PATHS + (["shards-cuda"] if report["machine"]["cuda"] else []))
    for name, row in paths.items():
        assert row["data_views_per_s"] > 0 and row["train_images_per_s"] > 0, name
        assert [s[:3] for s in row["first_batch_shapes"]] == expected, name
        assert all(s[2] == s[3] for s in row["first_batch_shapes"]), name
    assert report["methods"][method]["n_views"] == len(expected)


def test_summary_and_machine_facts(report):
    s = report["summary"]
    assert isinstance(s["shards_ge_2x_pil"], bool)
    for method, ratios in s["data_vs_pil"].items():
        assert ratios["pil"] == 1.0 and ratios["shards"] > 0
        assert s["shards_ge_2x_pil_by_method"][method] == (ratios["shards"] >= 2.0)
    m = report["machine"]
    assert m["cpu_count"] >= 1 and m["torch_threads"] >= 1 and m["torch"] and m["device"]
    assert report["images"]["n"] == 64 and Path(report["images"]["shards"], "index.json").is_file()
    if not m["cuda"]:
        assert any("shards-cuda" in n for n in report["notes"])
