"""MoCo v3 (methods/mocov3.py): the momentum rises from 0.99 to 1 by a cosine."""

from __future__ import annotations

import math

import pytest

from selfsup.methods import Progress
from selfsup.methods.mocov3 import MoCoV3Config

from _util import _tiny


def test_mocov3_momentum_rises_from_099_to_1_by_cosine():
    method = _tiny("mocov3", MoCoV3Config(proj_hidden_dim=16, pred_hidden_dim=16, proj_out_dim=8))
    assert method.ema_momentum(Progress(0, 100, 10)) == pytest.approx(0.99)
    assert method.ema_momentum(Progress(50, 100, 10)) == pytest.approx(0.995)
    assert method.ema_momentum(Progress(100, 100, 10)) == pytest.approx(1.0)
    # official adjust_moco_momentum: 1 - 0.5 * (1 + cos(pi * t)) * (1 - m0)
    assert method.ema_momentum(Progress(30, 100, 10)) == pytest.approx(1 - 0.5 * (1 + math.cos(0.3 * math.pi)) * 0.01)
