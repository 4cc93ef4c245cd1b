"""Run a function in N CPU processes joined by a gloo process group (the distributed tests)."""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import traceback
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str, fn, args) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    import torch

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = fn(rank, world, *args)
        payload = ("ok", result)
    except BaseException:  # noqa: BLE001 - report any failure to the parent
        payload = ("error", traceback.format_exc())
    finally:
        dist.destroy_process_group()
    with open(Path(out_dir) / f"{rank}.pkl", "wb") as f:
        pickle.dump(payload, f)


def run_distributed(fn, world: int = 2, *args):
    """Call ``fn(rank, world, *args)`` in ``world`` processes; return the list of their results.

    ``fn`` must be a module-level function (it is pickled into freshly spawned interpreters);
    results must be picklable (move tensors to CPU). A failure on any rank raises here with that
    rank's traceback.
    """
    with tempfile.TemporaryDirectory() as d:
        mp.start_processes(
            _worker, args=(world, _free_port(), d, fn, args), nprocs=world, join=True, start_method="spawn"
        )
        results = []
        for r in range(world):
            status, value = pickle.loads((Path(d) / f"{r}.pkl").read_bytes())
            if status != "ok":
                raise AssertionError(f"rank {r} failed:\n{value}")
            results.append(value)
        return results
