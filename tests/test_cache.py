"""The decode-once uint8 cache returns exactly the decoded pixels of the files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from selfsup.config import DataConfig, ViewSpec
from selfsup.data import pretrain_dataset
from selfsup.data.cache import RaggedSource, decoded
from selfsup.data.sources import DataError, FileSource


def _tree(root, n=4, size=(12, 10)):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            ext = "png" if i % 2 else "jpg"
            Image.fromarray(arr).save(root / c / f"{i}.{ext}")
    Image.new("L", size, 77).save(root / "a" / "gray.png")  # converted to RGB like any other


def test_cache_holds_exactly_the_decoded_pixels(tmp_path):
    _tree(tmp_path / "data")
    src = FileSource.scan(tmp_path / "data", labelled=True)
    cached = decoded(src, cache=tmp_path / "cache", progress=False)
    assert isinstance(cached.images, np.memmap) and cached.images.shape == (len(src), 10, 12, 3)
    for i in range(len(src)):
        with Image.open(src.files[i]) as img:
            expected = np.asarray(img.convert("RGB"))
        assert np.array_equal(cached.load_array(i), expected), src.name(i)
        assert cached.name(i) == src.name(i)
    assert list(cached.labels) == list(src.labels)
    # a second call maps the same file instead of decoding again
    files = sorted((tmp_path / "cache" / "decoded").iterdir())
    again = decoded(src, cache=tmp_path / "cache", progress=False)
    assert sorted((tmp_path / "cache" / "decoded").iterdir()) == files
    assert again.images.filename == cached.images.filename


def test_cache_keeps_whole_images_of_several_sizes_and_leaves_out_unreadable_files(tmp_path):
    """Images of several sizes are kept whole (no centre square): at their own size, or with the
    shorter side resized and the aspect ratio kept; unreadable files are named and left out."""
    _tree(tmp_path / "data")
    Image.new("RGB", (30, 20), (10, 20, 30)).save(tmp_path / "data" / "b" / "big.png")
    (tmp_path / "data" / "b" / "broken.jpg").write_bytes(b"not an image")
    src = FileSource.scan(tmp_path / "data", labelled=True)
    broken = [i for i in range(len(src)) if "broken" in src.name(i)]
    big = [i for i in range(len(src)) if "big" in src.name(i)][0]
    with pytest.warns(UserWarning, match="broken.jpg"):
        whole = decoded(src, cache=tmp_path / "c1", progress=False, workers=2)
    assert isinstance(whole, RaggedSource) and whole.unreadable == set(broken)
    for i in set(range(len(src))) - set(broken):
        with Image.open(src.files[i]) as img:
            assert np.array_equal(whole.load_array(i), np.asarray(img.convert("RGB"))), src.name(i)
    with pytest.warns(UserWarning, match="broken.jpg"):
        small = decoded(src, size=8, cache=tmp_path / "c2", progress=False, workers=1)
    assert small.load_array(big).shape == (8, 12, 3) and (small.load_array(big) == (10, 20, 30)).all()
    with Image.open(src.files[0]) as img:  # 12 x 10 -> shorter side 8: 10 x 8, Pillow's bicubic
        expected = np.asarray(img.convert("RGB").resize((10, 8), Image.BICUBIC))
    assert np.array_equal(small.load_array(0), expected)
    with pytest.raises(DataError, match="broken.jpg"):
        small.load_array(broken[0])


def test_batched_dataset_uses_the_cache_and_skips_unreadable(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    _tree(tmp_path / "data")
    (tmp_path / "data" / "b" / "broken.jpg").write_bytes(b"not an image")
    cfg = DataConfig(path=str(tmp_path / "data"), augment="batched", cache=True, views=[ViewSpec(count=2, size=8)])
    with pytest.warns(UserWarning, match="broken.jpg"):
        ds = pretrain_dataset(cfg)
    assert len(ds) == 9 and ds.raw and ds.batch_augment is not None
    views, label, skipped = ds[(0, 0)]
    assert views[0].dtype.is_floating_point is False and views[0].shape == (3, 10, 12)
    assert len(ds.batch_augment(views[0][None], seed=0)) == 2


def test_auto_augmentation_picks_the_batched_path_when_it_can(tmp_path, monkeypatch):
    """``data.augment: auto`` for a GPU: in-memory sources and decoded folders of one size give raw
    images cropped on the device; folders of several sizes give per-image crops of the whole image
    (torchvision's RandomResizedCrop, seeded per sample) with the rest batched; a folder too large for
    the cache is read from its files (decoded on the device, or cropped in the workers with
    ``decode: workers``), with nothing written. For the CPU: OpenCV's views, per image."""
    import selfsup.data.cache as cache

    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    views = [ViewSpec(count=2, size=8)]
    assert pretrain_dataset(DataConfig(source="digits", views=views), "cuda").raw  # in memory
    assert pretrain_dataset(DataConfig(source="digits", views=views), "cpu").views is not None
    _tree(tmp_path / "same")
    ds = pretrain_dataset(DataConfig(path=str(tmp_path / "same"), views=views), "cuda")
    assert ds.raw and ds.batch_augment.crop and isinstance(ds.source.images, np.memmap)
    first = FileSource.scan(tmp_path / "same", True).load_array(0)
    assert np.array_equal(ds[(0, 0)][0][0].permute(1, 2, 0).numpy(), first)

    _tree(tmp_path / "mixed")
    Image.new("RGB", (30, 20), (10, 20, 30)).save(tmp_path / "mixed" / "b" / "big.png")
    ds = pretrain_dataset(DataConfig(path=str(tmp_path / "mixed"), views=views), "cuda")
    assert isinstance(ds.source, RaggedSource) and not ds.raw and not ds.batch_augment.crop
    crops, _, _ = ds[(3, 12345)]
    torch.manual_seed(12345)
    crop = T.RandomResizedCrop(8, interpolation=T.InterpolationMode.BICUBIC, antialias=True)
    ref = [T.functional.pil_to_tensor(crop(ds.source.load(3))) for _ in range(2)]
    assert all(c.dtype == torch.uint8 and torch.equal(c, r) for c, r in zip(crops, ref))
    out = ds.batch_augment(torch.stack(crops)[:, None].unbind(0), seed=0)  # one batch per view
    assert len(out) == 2 and out[0].shape == (1, 3, 8, 8) and out[0].dtype == torch.float32

    monkeypatch.setattr(cache, "CACHE_SHARE", 1e-12)  # nothing fits: files, and nothing written
    _tree(tmp_path / "large")
    before = sorted((tmp_path / "cache" / "decoded").iterdir())
    ds = pretrain_dataset(DataConfig(path=str(tmp_path / "large"), views=views), "cuda")
    assert isinstance(ds.source, FileSource) and ds.encoded  # JPEGs sent undecoded, decoded on the GPU
    workers = pretrain_dataset(DataConfig(path=str(tmp_path / "large"), views=views, decode="workers"), "cuda")
    assert isinstance(workers.source, FileSource) and not workers.batch_augment.crop
    cpu = pretrain_dataset(DataConfig(path=str(tmp_path / "large"), views=views), "cpu")
    assert isinstance(cpu.source, FileSource) and cpu.views is not None and cpu.batch_augment is None
    assert sorted((tmp_path / "cache" / "decoded").iterdir()) == before
