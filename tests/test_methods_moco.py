"""MoCo v1/v2 (methods/moco.py): the loss and the keys it enqueues, shuffle-BN, and training steps under DDP."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.methods.moco import MoCoConfig
from selfsup.nn import SplitBatchNorm
from selfsup.nn.shuffle_bn import set_bn_splits

from _dist import run_distributed
from _util import _tiny, ref_info_nce_queue


def test_moco_loss_and_enqueued_keys_match_a_direct_computation():
    method = _tiny("mocov1", MoCoConfig(queue_size=32, shuffle_bn=False))
    torch.manual_seed(3)
    x1, x2 = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    before = method.queue().clone()
    with torch.no_grad():
        q = method.projector(method.backbone(x1))
        k = method.key_projector(method.key_backbone(x2))
    loss = method([x1, x2]).loss
    assert abs(loss.item() - ref_info_nce_queue(q, k, before, 0.07)) < 1e-4
    torch.testing.assert_close(method.queue.queue[:8], F.normalize(k, dim=1))
    torch.testing.assert_close(method.queue.queue[8:], before[8:])


def test_moco_shuffle_returns_keys_to_their_images():
    """With one BN split the key batch's statistics ignore order, so shuffled keys equal unshuffled ones;
    with several splits they differ (the statistics are per split)."""
    x = torch.randn(8, 3, 16, 16)
    plain = _tiny("mocov1", MoCoConfig(queue_size=32, shuffle_bn=False))
    one_split = _tiny("mocov1", MoCoConfig(queue_size=32, bn_splits=1))
    four = _tiny("mocov1", MoCoConfig(queue_size=32, bn_splits=4))
    seen = []
    for bn in (four.backbone.bn1, four.key_backbone.bn1):
        bn.register_forward_pre_hook(lambda m, _: seen.append(m.num_splits))
    four([x, x])
    assert seen == [4, 4]  # query and key encoders normalize per split during the step
    assert all(m.num_splits == 1 for m in four.modules() if isinstance(m, SplitBatchNorm))  # plain BN between steps
    set_bn_splits(four, 4)
    reference = plain.keys(x)
    torch.testing.assert_close(one_split.keys(x), reference, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(four.keys(x), reference, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# whole training steps in the loop under DDP (MoCo v2, and MoCo v3 and SimCLR v2 beside it)


SMALL_HEADS = {
    "mocov2": ["method.queue_size=64"],
    "mocov3": ["method.proj_hidden_dim=64", "method.pred_hidden_dim=64"],
    "simclrv2": ["method.queue_size=64"],
}


def _fit_ranks(rank, world, tmp):
    from selfsup.app.runs import build_from_config
    from selfsup.train.loop import fit

    from _util import tiny_config, tiny_dataset

    states = {}
    for name, extra in SMALL_HEADS.items():
        cfg = tiny_config(name, batch=8, extra=["train.epochs=1", *extra])
        method = build_from_config(cfg)
        fit(method, tiny_dataset(cfg, 16), cfg.optim, cfg.train, tmp / name if rank == 0 else None)
        states[name] = {k: v.detach().clone() for k, v in method.state_dict().items()}
    return states


def test_training_steps_under_ddp(tmp_path):
    """MoCo v3 and SimCLR v2 (global BN, gathered keys, memory filled from all ranks) on two processes
    equal one process with the same global batch; MoCo v2 (shuffle-BN across ranks, by design not
    equal to one process) keeps one queue and one set of weights on both ranks."""
    from selfsup.app.runs import build_from_config
    from selfsup.train.loop import fit

    from _util import tiny_config, tiny_dataset

    ranks = run_distributed(_fit_ranks, 2, tmp_path / "two")
    for name in ("mocov3", "simclrv2"):
        cfg = tiny_config(name, batch=8, extra=["train.epochs=1", *SMALL_HEADS[name]])
        method = build_from_config(cfg)
        fit(method, tiny_dataset(cfg, 16), cfg.optim, cfg.train, tmp_path / "one" / name)
        for k, v in method.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                for r in ranks:
                    torch.testing.assert_close(r[name][k], v, rtol=2e-4, atol=2e-5, msg=f"{name}: {k} differs")
    a, b = ranks[0]["mocov2"], ranks[1]["mocov2"]
    for k in a:  # BN running statistics are per rank with shuffle-BN
        if "running_" not in k and "num_batches" not in k:
            torch.testing.assert_close(a[k], b[k], msg=f"mocov2: {k} differs between ranks")
    assert a["queue.ptr"].item() == 2 * 8  # two steps of 8 keys (4 per rank) were enqueued
