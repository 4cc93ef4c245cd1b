"""The CPU's fast view path (OpenCV per image): each operation against torchvision's functional of
the same name, the random parameters against the Pillow path's, the reduced-scale JPEG decode
against a full decode, and the path chosen by ``augment: auto``."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from selfsup.config import DataConfig, ViewSpec
from selfsup.data import ViewDataset, pretrain_dataset, resolve_augment, view_transform
from selfsup.data import opencv_views as ov
from selfsup.data.sources import DataError, FileSource

pytest.importorskip("cv2")


def photo(w: int = 96, h: int = 72, seed: int = 0) -> np.ndarray:
    """A non-square crop of one of scikit-learn's sample photographs (real detail), uint8 (h, w, 3)."""
    from sklearn.datasets import load_sample_images

    img = load_sample_images().images[seed % 2]
    rng = np.random.default_rng(seed)
    top, left = rng.integers(0, img.shape[0] - 4 * h // 3), rng.integers(0, img.shape[1] - 4 * w // 3)
    crop = Image.fromarray(img[top : top + 4 * h // 3, left : left + 4 * w // 3])
    return np.array(crop.resize((w, h), Image.Resampling.BILINEAR))


def images() -> list[np.ndarray]:
    noise = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    return [photo(seed=0), photo(64, 80, seed=1), noise]


def levels(a, b) -> np.ndarray:
    return np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int))


def chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)


def hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("f", [0.3, 1.0, 1.7])
def test_colour_ops_match_torchvision_on_pillow(f):
    for a in images():
        pil = Image.fromarray(a)
        # lookup tables: Pillow's blends exactly
        assert levels(ov.brightness(a, f), TF.adjust_brightness(pil, f)).max() == 0
        assert levels(ov.contrast(a, f), TF.adjust_contrast(pil, f)).max() == 0
        # a blend with OpenCV's grayscale (within 1 of Pillow's), rounded where Pillow truncates
        assert levels(ov.saturation(a, f), TF.adjust_saturation(pil, f)).max() <= 2
    for a in images():
        pil = Image.fromarray(a)
        assert levels(ov.grayscale(a), TF.rgb_to_grayscale(pil, 3)).max() <= 1
        assert levels(ov.solarize(a), TF.solarize(pil, 128)).max() == 0


@pytest.mark.parametrize("f", [-0.5, -0.2, 0.05, 0.37, 0.5])
def test_hue_matches_torchvision_tensor_definition(f):
    for a in images():
        ref = hwc(TF.adjust_hue(chw(a), f))
        d = levels(ov.hue(a, f), ref)
        assert d.max() <= 1 and d.mean() < 0.2
    # Pillow's 8-bit HSV is coarser: the reason the path does not use it
    a = images()[0]
    assert levels(TF.adjust_hue(Image.fromarray(a), 0.37), hwc(TF.adjust_hue(chw(a), 0.37))).max() >= 2


@pytest.mark.parametrize("kernel,sigma", [(23, 0.1), (23, 0.5), (23, 1.3), (23, 2.0), (9, 2.0), (5, 1.0)])
def test_blur_matches_torchvision_gaussian_blur(kernel, sigma):
    for a in images():
        ref = hwc(TF.gaussian_blur(chw(a), [kernel, kernel], [sigma, sigma]))
        assert levels(ov.gaussian_blur(a, kernel, sigma), ref).max() <= 1


def test_params_drawn_as_the_pillow_path_draws_them():
    """The same RNG calls in the same order: after one sample's views the generator is in the same
    state, and with the ops both paths compute alike (bilinear crop, no hue, no blur), the views agree."""
    spec = ViewSpec(size=32, interpolation="bilinear", hue=0.0, blur_p=0.0, solarize_p=0.3, count=2)
    other = dataclasses.replace(spec, size=24, scale=(0.05, 0.4), count=3, jitter_p=0.5, grayscale_p=0.5)
    specs = [spec, spec, other, other, other]
    pil = [view_transform(s) for s in specs]
    fast = ov.OpenCVViews(specs, reduce=False)
    worst = []
    for seed in range(12):
        a = images()[seed % 2]
        torch.manual_seed(seed)
        ref = [t(Image.fromarray(a)) for t in pil]
        after_pil = torch.rand(3)
        torch.manual_seed(seed)
        got = fast(Image.fromarray(a))
        assert torch.equal(torch.rand(3), after_pil)
        for r, g in zip(ref, got):
            worst.append(((r - g).abs() * 0.229 * 255).max().item())  # in levels (std <= 0.229)
    # a wrong crop box, flip or jitter factor is tens of levels off; rounding differences a few
    assert max(worst) <= 6, worst


def test_crop_params_follow_torchvision_on_non_square_images():
    """The boxes are drawn with torchvision's RandomResizedCrop algorithm against the whole image:
    their statistics match torchvision's own draws (same seeds: identical)."""
    from torchvision.transforms import v2

    spec = ViewSpec(size=32)
    rrc = v2.RandomResizedCrop(32, scale=spec.scale, ratio=spec.ratio)
    for h, w in [(375, 500), (500, 200), (100, 1000)]:
        img = torch.zeros(3, h, w, dtype=torch.uint8)
        for seed in range(50):
            torch.manual_seed(seed)
            ref = rrc.make_params([img])
            torch.manual_seed(seed)
            assert ov.crop_params(spec, h, w) == (ref["top"], ref["left"], ref["height"], ref["width"])


def test_reduction_by_hand():
    specs = [ViewSpec(size=100), ViewSpec(size=50)]

    def params(*boxes):
        return [{"box": b} for b in boxes]

    assert ov.reduction(specs, params((0, 0, 150, 400), (0, 0, 100, 100))) == 1  # 150 / 100 < 2
    assert ov.reduction(specs, params((0, 0, 200, 400), (0, 0, 100, 100))) == 2
    assert ov.reduction(specs, params((0, 0, 450, 800), (0, 0, 400, 210))) == 4
    assert ov.reduction(specs, params((0, 0, 900, 800), (0, 0, 900, 900))) == 8
    assert ov.reduction(specs, params((0, 0, 50, 50), (0, 0, 20, 20))) == 1  # upsampled views


def _jpeg(a: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_reduced_decode_within_stated_tolerance_of_full_decode():
    """JPEG decoded at 1/2-1/8 scale where every crop allows it, against full decode + resize: mean
    difference at most 2 levels, 99th percentile at most 16 (measured: 1.5 and 11; the JPEG coding error at quality
    90 is of that order), on scikit-learn's real 640 x 427 photographs."""
    from sklearn.datasets import load_sample_images

    datas = [_jpeg(p) for p in load_sample_images().images]
    spec = ViewSpec(size=80, scale=(0.2, 1.0), hflip_p=0, jitter_p=0, grayscale_p=0, blur_p=0)
    unit = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255,) * 3}  # views in levels
    full, reduced = ov.OpenCVViews([spec], **unit, reduce=False), ov.OpenCVViews([spec], **unit)
    diffs, ks = [], []
    for seed in range(24):
        img = Image.open(io.BytesIO(datas[seed % 2]))
        torch.manual_seed(seed)
        ks.append(ov.reduction([spec], [ov.draw_params(spec, img.size[1], img.size[0])]))
        torch.manual_seed(seed)
        a = full(Image.open(io.BytesIO(datas[seed % 2])))[0]
        torch.manual_seed(seed)
        b = reduced(Image.open(io.BytesIO(datas[seed % 2])))[0]
        diffs.append((a - b).abs().flatten())
    d = torch.cat(diffs)
    assert set(ks) >= {2, 4}  # the test exercises reduction
    assert d.mean() <= 2.0 and torch.quantile(d, 0.99) <= 16.0
    # and a view that cannot be reduced is the full decode's exactly
    small = dataclasses.replace(spec, size=300, scale=(0.9, 1.0))
    for seed in range(3):
        torch.manual_seed(seed)
        a = ov.OpenCVViews([small], reduce=False)(Image.open(io.BytesIO(datas[0])))[0]
        torch.manual_seed(seed)
        assert torch.equal(a, ov.OpenCVViews([small])(Image.open(io.BytesIO(datas[0])))[0])


def _folder(tmp_path, n: int = 6, corrupt: bool = True):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(photo(60 + 8 * i, 48, seed=i)).save(root / "a" / f"{i}.jpg", quality=90)
    if corrupt:
        (root / "a" / "2.jpg").write_bytes(_jpeg(photo(seed=2))[:300])  # truncated
    return root


def test_dataset_views_seeded_per_sample_and_corrupt_files_named(tmp_path):
    root = _folder(tmp_path)
    source = FileSource.scan(root, labelled=True)
    specs = [ViewSpec(size=24), ViewSpec(size=16, scale=(0.05, 0.4))]
    ds = ViewDataset(source, [], views=ov.OpenCVViews(specs))
    views, label, skipped = ds[(1, 123)]
    assert [tuple(v.shape) for v in views] == [(3, 24, 24), (3, 16, 16)] and label == 0 and not skipped
    again, _, _ = ds[(1, 123)]
    other, _, _ = ds[(1, 124)]
    assert all(torch.equal(a, b) for a, b in zip(views, again))
    assert not torch.equal(views[0], other[0])
    # the truncated file is skipped and named; the next readable image stands in, with the seed
    # the unreadable one had
    bad, _, skipped = ds[(2, 7)]
    assert len(skipped) == 1 and "2.jpg" in skipped[0]
    torch.manual_seed(7)
    stand_in = ov.OpenCVViews(specs)(Image.open(root / "a" / "3.jpg"))
    assert all(torch.equal(a, b) for a, b in zip(bad, stand_in))


def test_auto_picks_opencv_on_the_cpu_and_batched_on_a_gpu(tmp_path, monkeypatch):
    assert resolve_augment("auto", "cpu") == "opencv"
    assert resolve_augment("auto", "cuda") == "batched"
    assert resolve_augment("pil", "cpu") == "pil"
    root = _folder(tmp_path, corrupt=False)
    cfg = DataConfig(path=str(root), views=[ViewSpec(size=16, count=2)], cache=False)
    ds = pretrain_dataset(dataclasses.replace(cfg, augment="auto"), "cpu")
    assert isinstance(ds.views, ov.OpenCVViews) and ds.batch_augment is None
    views, _, _ = ds[(0, 5)]
    assert len(views) == 2 and views[0].dtype == torch.float32
    # without OpenCV: auto falls back to Pillow, and asking for it by name is a clear error
    monkeypatch.setattr("selfsup.data.opencv_available", lambda: False)
    assert resolve_augment("auto", "cpu") == "pil"
    with pytest.raises(DataError, match="opencv"):
        resolve_augment("opencv", "cpu")


def test_untruncated_blur_follows_pillows_where_the_fraction_kernel_is_too_short():
    """``blur_kernel_frac: 0`` (the presets whose official code blurs with Pillow): 4 sigma either side,
    within 2 levels of Pillow's GaussianBlur on average; 10% of a 32-px side (3 taps) is far from it."""
    from PIL import ImageFilter

    from selfsup.data.views import blur_kernel_size

    assert blur_kernel_size(ViewSpec(size=224)) == 23 and blur_kernel_size(ViewSpec(size=96)) == 9
    assert blur_kernel_size(ViewSpec(size=96, blur_kernel_frac=0.0)) == 17  # 2 * ceil(4 * 2.0) + 1
    assert blur_kernel_size(ViewSpec(size=96, blur_sigma=(0.1, 1.0), blur_kernel_frac=0.0)) == 9
    assert blur_kernel_size(ViewSpec(size=8, blur_kernel_frac=0.0)) == 15  # the reflected border's limit
    full, short = (blur_kernel_size(ViewSpec(size=32, blur_kernel_frac=f)) for f in (0.0, 0.1))
    for a in images():
        pil = Image.fromarray(a).filter(ImageFilter.GaussianBlur(2.0))
        assert levels(ov.gaussian_blur(a, full, 2.0), pil).mean() < 2.0
        assert (
            levels(ov.gaussian_blur(a, short, 2.0), pil).mean() > 2 * levels(ov.gaussian_blur(a, full, 2.0), pil).mean()
        )
    for name in ("dino-vits16-imagenet", "dino-r50-imagenet", "ibot-vits16-imagenet", "swav-imagenet", "swav-cifar10"):
        from selfsup.config import load_config

        assert all(v.blur_kernel_frac == 0.0 for v in load_config(name).data.views), name
