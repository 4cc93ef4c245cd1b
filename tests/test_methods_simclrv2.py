"""SimCLR v2 (methods/simclrv2.py): the memory of momentum embeddings, and fine-tuning from the first head layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.methods.simclrv2 import SimCLRv2Config

from _util import _tiny, ref_ntxent_with_negatives


def test_simclrv2_memory_holds_momentum_embeddings_of_both_views():
    method = _tiny("simclrv2", SimCLRv2Config(queue_size=32, proj_hidden_dim=16))
    x1, x2 = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    before = method.queue().clone()
    with torch.no_grad():
        z = method.projector(method.backbone(torch.cat([x1, x2])))
        keys = method.memory_projector(method.memory_backbone(torch.cat([x1, x2])))
    loss = method([x1, x2]).loss
    # the official scale: loss_a + loss_b, twice the mean over the 2N anchors
    assert abs(loss.item() - 2 * ref_ntxent_with_negatives(z[:4], z[4:], before, 0.1)) < 2e-4
    torch.testing.assert_close(method.queue.queue[:8], F.normalize(keys, dim=1))


def test_simclrv2_finetunes_from_the_first_head_layer():
    method = _tiny("simclrv2", SimCLRv2Config(queue_size=0, proj_hidden_dim=16)).eval()
    assert len([m for m in method.projector if isinstance(m, nn.Linear)]) == 3 and method.ema_pairs() == []
    head = method.head_layers(method.cfg.finetune_layer)
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] and head[0].out_features == 16
    enc = nn.Sequential(method.backbone, head)
    x = torch.randn(2, 3, 16, 16)
    lin, bn = method.projector[0], method.projector[1]
    with torch.no_grad():
        h = method.backbone(x) @ lin.weight.T
        expected = F.relu((h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias)
        torch.testing.assert_close(enc(x), expected)
