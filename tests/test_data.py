"""Sources, views and the sampler."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.config import DataConfig, ViewSpec
from selfsup.data import EpochSampler, ViewDataset, build_source, collate, subset_indices, view_transform
from selfsup.data.sources import DataError, FileSource, digits_source
from selfsup.data.views import blur_kernel_size


def _write_images(root, n=3, size=20):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_imagefolder_and_plain_folder(tmp_path):
    _write_images(tmp_path / "tree")
    src = build_source(DataConfig(path=str(tmp_path / "tree")))
    assert src.classes == ["cat", "dog"] and list(src.labels) == [0, 0, 0, 1, 1, 1]
    flat = tmp_path / "flat" / "nested"
    flat.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(flat / "a.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "b.webp")
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    src = build_source(DataConfig(source="folder", path=str(tmp_path / "flat")))
    assert len(src) == 2 and (src.labels == -1).all()


@pytest.mark.parametrize("mode", ["RGBA", "L", "CMYK", "P", "LA", "I;16"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    ext = "tiff" if mode in ("CMYK", "I;16") else "png"
    img = Image.new(mode, (6, 5))
    img.save(tmp_path / f"x.{ext}")
    src = FileSource.scan(tmp_path, labelled=False)
    out = src.load(0)
    assert out.mode == "RGB" and out.size == (6, 5)


def test_rgba_alpha_is_composited_on_black(tmp_path):
    img = Image.new("RGBA", (2, 1), (200, 100, 50, 255))
    img.putpixel((1, 0), (200, 100, 50, 0))
    img.save(tmp_path / "a.png")
    out = np.asarray(FileSource.scan(tmp_path, labelled=False).load(0))
    assert out[0, 0].tolist() == [200, 100, 50] and out[0, 1].tolist() == [0, 0, 0]


def test_corrupt_files_are_skipped_with_their_names(tmp_path):
    _write_images(tmp_path)
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"not a jpeg at all")
    src = FileSource.scan(tmp_path, labelled=True)
    ds = ViewDataset(src, [view_transform(ViewSpec(size=8, blur_p=0))])
    bad = [i for i in range(len(src)) if "broken" in src.name(i)][0]
    views, label, skipped = ds[(bad, 1)]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0]
    assert views[0].shape == (3, 8, 8)
    batch = collate([ds[(i, i)] for i in range(len(ds))])
    assert len(batch["skipped"]) == 1 and batch["views"][0].shape[0] == len(ds)


def test_all_corrupt_is_a_clear_error(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(b"garbage")
    ds = ViewDataset(FileSource.scan(tmp_path, labelled=False), [view_transform(ViewSpec(size=8))])
    with pytest.raises(DataError, match="none of the 3 images"):
        ds.check_readable()


def test_missing_dir_and_empty_dir(tmp_path):
    with pytest.raises(DataError, match="not found"):
        build_source(DataConfig(path=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="no image files"):
        build_source(DataConfig(source="folder", path=str(tmp_path)))


def test_limit_is_a_fixed_seed_subset():
    a, b = subset_indices(100, 10, 0), subset_indices(100, 10, 0)
    assert np.array_equal(a, b) and len(set(a)) == 10 and not np.array_equal(a, subset_indices(100, 10, 1))
    assert np.array_equal(subset_indices(5, 10, 0), np.arange(5))


def test_digits_source_ships_offline():
    tr, te = digits_source("train"), digits_source("test")
    assert len(tr) + len(te) == 1797 and len(te) == 360
    assert np.asarray(tr.load(0)).shape == (32, 32, 3)


def test_views_shapes_ranges_and_determinism():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    spec = ViewSpec(size=24, solarize_p=0.5)
    t = view_transform(spec, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    torch.manual_seed(3)
    x = t(img)
    torch.manual_seed(3)
    assert torch.equal(x, t(img))
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32
    assert x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6  # (u - 0.5) / 0.5 for u in [0, 1]
    assert blur_kernel_size(ViewSpec(size=224)) == 23 and blur_kernel_size(ViewSpec(size=32)) == 3


def test_view_statistics_follow_the_spec():
    # grayscale p=1 -> all channels equal; flip p=1 on an image with a bright left column
    arr = np.zeros((16, 16, 3), dtype=np.uint8)
    arr[:, 0] = 255
    img = Image.fromarray(arr)
    spec = ViewSpec(
        size=16,
        scale=(1.0, 1.0),
        ratio=(1.0, 1.0),
        hflip_p=1.0,
        jitter_p=0,
        grayscale_p=1.0,
        blur_p=0,
    )
    x = view_transform(spec, mean=(0, 0, 0), std=(1, 1, 1))(img)
    assert torch.allclose(x[0], x[1]) and torch.allclose(x[1], x[2])
    assert x[:, :, -1].mean() > 0.9 and x[:, :, 0].mean() < 0.1
    # colour jitter applied with probability jitter_p: measure the rate over many draws
    spec = ViewSpec(size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_p=0, jitter_p=0.8, grayscale_p=0, blur_p=0)
    col = Image.fromarray(np.full((8, 8, 3), (120, 60, 30), dtype=np.uint8))
    base = ViewSpec(size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_p=0, jitter_p=0, grayscale_p=0, blur_p=0)
    ref = view_transform(base)(col)
    t = view_transform(spec)
    changed = sum(not torch.allclose(t(col), ref) for _ in range(400)) / 400
    assert abs(changed - 0.8) < 0.07


def test_sampler_resumes_and_shards_like_one_process():
    s = EpochSampler(50, global_batch=8, seed=1)
    assert s.steps_per_epoch == 6 and len(s) == 48
    full = list(s)
    assert len({i for i, _ in full}) == 48
    s.set_position(0, 2)
    assert list(s) == full[16:]
    s.set_position(1)
    assert [i for i, _ in s] != [i for i, _ in full]  # a new permutation each epoch
    # two ranks, in rank order, give the same global batches as one process
    r0, r1 = EpochSampler(50, 8, seed=1, rank=0, world=2), EpochSampler(50, 8, seed=1, rank=1, world=2)
    a, b = list(r0), list(r1)
    merged = [x for step in range(6) for x in a[step * 4 : step * 4 + 4] + b[step * 4 : step * 4 + 4]]
    assert merged == full
    with pytest.raises(ValueError, match="divisible"):
        EpochSampler(50, 7, world=2)


def test_samples_seeds_make_views_independent_of_order():
    src = digits_source("test")
    ds = ViewDataset(src, [view_transform(ViewSpec(size=16))])
    a = ds[(5, 123)][0][0]
    ds[(7, 9)]
    assert torch.equal(a, ds[(5, 123)][0][0])
    assert not torch.equal(a, ds[(5, 124)][0][0])


def test_no_warnings_on_clean_data(tmp_path):
    _write_images(tmp_path)
    ds = ViewDataset(FileSource.scan(tmp_path, labelled=True), [view_transform(ViewSpec(size=8))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = collate([ds[(i, i)] for i in range(len(ds))])
    assert batch["skipped"] == [] and batch["labels"].tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_view_crop_uses_the_specs_interpolation(mode):
    from torchvision import transforms as T
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T2

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    spec = ViewSpec(size=24, hflip_p=0, jitter_p=0, grayscale_p=0, blur_p=0)
    spec.interpolation = mode
    torch.manual_seed(3)
    ours = view_transform(spec, mean=(0, 0, 0), std=(1, 1, 1))(img)
    torch.manual_seed(3)
    crop = T.RandomResizedCrop(24, scale=spec.scale, ratio=spec.ratio, interpolation=InterpolationMode(mode))
    expected = T2.functional.to_dtype(T2.functional.pil_to_tensor(crop(img)), torch.float32, scale=True)
    torch.testing.assert_close(ours, expected)
