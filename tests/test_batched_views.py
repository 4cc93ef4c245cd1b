"""Batched augmentation against torchvision's per-image functionals, and the Pillow path's statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from selfsup.config import IMAGENET_MEAN, IMAGENET_STD, ViewSpec
from selfsup.data.batched import (
    BatchedViews,
    ViewParams,
    apply_view,
    sample_crop_boxes,
    sample_params,
)
from selfsup.data.views import blur_kernel_size, view_transform

JITTER = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def reference_view(img: torch.Tensor, spec: ViewSpec, p: ViewParams, b: int) -> torch.Tensor:
    """One sample through torchvision's functionals with the same parameters."""
    top, left, h, w = (int(v) for v in p.boxes[b])
    y = TF.resized_crop(img, top, left, h, w, [spec.size, spec.size], antialias=False)
    if p.flip[b]:
        y = TF.horizontal_flip(y)
    if p.jitter[b]:
        for op in p.order[b].tolist():
            y = JITTER[op](y, float(p.factors[b, op]))
    if p.gray[b]:
        y = TF.rgb_to_grayscale(y, num_output_channels=3)
    if p.blur[b]:
        y = TF.gaussian_blur(y, [blur_kernel_size(spec)] * 2, [float(p.sigma[b])] * 2)
    if p.solarize[b]:
        y = TF.solarize(y, 0.5)
    return TF.normalize(y, list(IMAGENET_MEAN), list(IMAGENET_STD))


@pytest.mark.parametrize("size", [16, 40])
def test_batched_ops_equal_torchvision_per_image(size):
    torch.manual_seed(0)
    x = torch.rand(24, 3, 28, 30)
    spec = ViewSpec(
        size=size,
        scale=(0.1, 1.0),
        hflip_p=0.5,
        jitter_p=0.8,
        grayscale_p=0.3,
        blur_p=0.5,
        blur_kernel_frac=0.2,
        solarize_p=0.3,
    )
    p = sample_params(spec, 24, 28, 30, torch.Generator().manual_seed(1))
    assert p.jitter.any() and p.gray.any() and p.blur.any() and p.solarize.any() and p.flip.any()
    out = apply_view(x, spec, p)
    for b in range(24):
        torch.testing.assert_close(out[b], reference_view(x[b], spec, p, b), rtol=1e-4, atol=2e-4, msg=f"sample {b}")


def test_crop_boxes_follow_torchvision_algorithm():
    spec = ViewSpec(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    boxes = sample_crop_boxes(spec, 20000, 32, 48, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 48).all()
    # statistics against torchvision's own sampler
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    ref = torch.tensor(
        [RandomResizedCrop.get_params(torch.empty(3, 32, 48), [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(20000)],
        dtype=torch.float32,
    )
    area, ref_area = (h * w) / (32 * 48), ref[:, 2] * ref[:, 3] / (32 * 48)
    assert abs(area.mean() - ref_area.mean()) < 0.01 and abs(area.std() - ref_area.std()) < 0.01
    assert abs((w / h).log().mean() - (ref[:, 3] / ref[:, 2]).log().mean()) < 0.01
    for q in (0.1, 0.5, 0.9):
        assert abs(area.quantile(q) - ref_area.quantile(q)) < 0.02


def test_parameter_rates_and_ranges_match_the_spec():
    spec = ViewSpec(hflip_p=0.5, jitter_p=0.8, grayscale_p=0.2, blur_p=0.5, solarize_p=0.2, brightness=0.4, hue=0.1)
    p = sample_params(spec, 40000, 32, 32, torch.Generator().manual_seed(0))
    for flag, rate in [(p.flip, 0.5), (p.jitter, 0.8), (p.gray, 0.2), (p.blur, 0.5), (p.solarize, 0.2)]:
        assert abs(flag.float().mean().item() - rate) < 0.01
    assert p.factors[:, 0].min() >= 0.6 and p.factors[:, 0].max() <= 1.4
    assert p.factors[:, 3].abs().max() <= 0.1 and abs(p.factors[:, 3].mean()) < 0.005
    assert p.sigma.min() >= 0.1 and p.sigma.max() <= 2.0
    # each op equally often in each slot of the random order
    counts = torch.stack([(p.order[:, 0] == k).float().mean() for k in range(4)])
    assert (counts - 0.25).abs().max() < 0.01


def test_batched_and_pillow_paths_give_the_same_distribution_of_views():
    """Per-pixel mean and std over many views of one image agree between the two paths."""
    # a smooth image (the paths resample differently: bicubic vs bilinear; see the module docstring)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    arr = (np.stack([xx, yy, 1 - xx * yy], -1) * 200 + 20).astype(np.uint8)
    arr[8:24, 8:24] = (230, 60, 20)
    spec = ViewSpec(
        size=32,
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        hue=0.1,
        blur_p=0.0,
    )
    n = 3000
    pil = view_transform(spec, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    img = Image.fromarray(arr)
    torch.manual_seed(0)
    a = torch.stack([pil(img) for _ in range(n)])
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].expand(n, -1, -1, -1)
    b = BatchedViews([spec], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))(x, seed=0)[0]
    assert b.shape == a.shape
    assert b.min() >= 0 and b.max() <= 1 and a.min() >= 0 and a.max() <= 1
    # channel means and overall spread agree; per-pixel maps agree up to resampling differences
    torch.testing.assert_close(b.mean((0, 2, 3)), a.mean((0, 2, 3)), atol=0.01, rtol=0)
    torch.testing.assert_close(b.std(), a.std(), atol=0.01, rtol=0)
    assert (b.mean(0) - a.mean(0)).abs().mean() < 0.02


def test_batched_views_are_seeded():
    x = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8)
    bv = BatchedViews([ViewSpec(count=2, size=12)])
    v1, v2 = bv(x, 5), bv(x, 5)
    assert len(v1) == 2 and all(torch.equal(a, b) for a, b in zip(v1, v2))
    assert not torch.equal(v1[0], bv(x, 6)[0]) and not torch.equal(v1[0], v1[1])
