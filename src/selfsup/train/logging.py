"""Metrics to ``metrics.jsonl`` and TensorBoard (rank 0 only)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends one JSON object per record; mirrors scalars to TensorBoard when it is installed.

    ``resume_from(step)`` drops records past ``step``, written by a run that died after its last
    checkpoint, so the resumed run's curves have no duplicate steps.
    """

    def __init__(self, out_dir: Path | None, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled and out_dir is not None
        self.path = Path(out_dir) / "metrics.jsonl" if out_dir is not None else None
        self._tb = None
        if self.enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(out_dir) / "tb"))
            except ImportError:  # pragma: no cover - tensorboard is a dependency, but be lenient
                warnings.warn("tensorboard is not installed; metrics go to metrics.jsonl only", stacklevel=2)

    def resume_from(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if rec.get("step", 0) <= step:
                keep.append(line)
        self.path.write_text("".join(k + "\n" for k in keep))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")
        if self._tb is not None and "step" in record:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
