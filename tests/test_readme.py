"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    block = re.search(r"## Python\n\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    out = capsys.readouterr().out
    # the printed figures are the run's: its last loss, below its first, and the kNN of its encoder
    import selfsup
    from selfsup.train.logging import read_metrics

    losses = [r["loss"] for r in read_metrics(tmp_path / "runs" / "py-demo") if "loss" in r]
    result = ns["result"]
    assert result.loss == losses[-1] < losses[0]
    knn = selfsup.knn_eval(ns["method"].encoder, ns["bank"], ns["test"], k=20)
    assert out.split()[0] == str(result.loss) and f"'top1': {knn['top1']}" in out, out
    assert (tmp_path / "runs" / "py-demo" / "backbone.safetensors").is_file()
