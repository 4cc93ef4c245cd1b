"""A run stopped by SIGTERM checkpoints, and `--resume` finishes it: alone and under torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from selfsup.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

SETS = [
    "backbone.name=resnet10",
    "backbone.cifar_stem=false",
    "data.views.0.size=16",
    "data.limit=64",
    "train.batch_size=8",
    "train.epochs=3",
    "train.log_every=1",
    "train.progress=false",
    "data.num_workers=0",
    "optim.warmup_epochs=0",
]


def _cmd(launcher, data, out, resume=False):
    sets = [a for s in SETS for a in ("--set", s)]
    return [
        *launcher,
        "pretrain",
        "simclr-cifar10",
        "--data",
        str(data),
        "--out",
        str(out),
        *sets,
        *(["--resume"] if resume else []),
    ]


def _stop_after_first_checkpoint(cmd, ckpt, env, timeout=240):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.time()
    while not ckpt.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before its first checkpoint:\n{proc.stderr.read()[-3000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("no checkpoint in time")
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


@pytest.mark.parametrize("nproc", [1, 2])
def test_sigterm_checkpoints_and_resume_finishes(nproc, cifar_dir, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        launcher = [sys.executable, "-m", "selfsup"]
    else:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "selfsup",
        ]
    ckpt = out / "checkpoints" / "last.pt"
    code, err = _stop_after_first_checkpoint(_cmd(launcher, cifar_dir / "train", out), ckpt, env)
    assert code != 0, "a stopped run does not report success"
    stopped_at = load_checkpoint(ckpt)["step"]
    assert 0 < stopped_at < 24 and not (out / "backbone.safetensors").exists()
    if nproc == 1:
        assert "resume with --resume" in err
    done = subprocess.run(
        _cmd(launcher, cifar_dir / "train", out, resume=True), capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_checkpoint(ckpt)
    assert state["step"] == 24 and state["world_size"] == nproc
    assert (out / "backbone.safetensors").is_file()
    steps = [json.loads(x).get("step") for x in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [s for s in steps if s]
    assert logged[-1] == 24 and len(logged) == len(set(logged)) + 1  # only the resume marker repeats a step
