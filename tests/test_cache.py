"""The decode-once uint8 cache returns exactly the decoded pixels of the files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from selfsup.config import DataConfig, ViewSpec
from selfsup.data import pretrain_dataset
from selfsup.data.cache import decoded
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


def test_cache_fits_mixed_sizes_and_leaves_out_unreadable_files(tmp_path):
    _tree(tmp_path / "data")
    Image.new("RGB", (30, 20), (10, 20, 30)).save(tmp_path / "data" / "b" / "big.png")
    (tmp_path / "data" / "b" / "broken.jpg").write_bytes(b"not an image")
    src = FileSource.scan(tmp_path / "data", labelled=True)
    with pytest.raises(DataError, match="cache_size"):
        decoded(src, cache=tmp_path / "c1", progress=False)
    with pytest.warns(UserWarning, match="broken.jpg"):
        cached = decoded(src, size=8, cache=tmp_path / "c2", progress=False)
    broken = [i for i in range(len(src)) if "broken" in src.name(i)]
    assert cached.images.shape[1:] == (8, 8, 3) and cached.unreadable == set(broken)
    big = [i for i in range(len(src)) if "big" in src.name(i)][0]
    assert (cached.load_array(big) == (10, 20, 30)).all()


def test_batched_dataset_uses_the_cache_and_skips_unreadable(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    _tree(tmp_path / "data")
    (tmp_path / "data" / "b" / "broken.jpg").write_bytes(b"not an image")
    cfg = DataConfig(path=str(tmp_path / "data"), augment="batched", views=[ViewSpec(count=2, size=8)])
    with pytest.warns(UserWarning, match="broken.jpg"):
        ds = pretrain_dataset(cfg)
    assert len(ds) == 9 and ds.raw and ds.batch_augment is not None
    views, label, skipped = ds[(0, 0)]
    assert views[0].dtype.is_floating_point is False and views[0].shape == (3, 10, 12)
    assert len(ds.batch_augment(views[0][None], seed=0)) == 2


def test_auto_augmentation_picks_the_batched_path_when_it_can(tmp_path, monkeypatch):
    """``data.augment: auto``: in-memory sources and folders of one size go batched (the folder decoded
    once); folders of several sizes, or too large for the cache, go per image, and say why only once."""
    import selfsup.data.cache as cache

    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    views = [ViewSpec(count=2, size=8)]
    assert pretrain_dataset(DataConfig(source="digits", views=views)).raw  # in memory
    _tree(tmp_path / "same")
    ds = pretrain_dataset(DataConfig(path=str(tmp_path / "same"), views=views))
    assert ds.raw and ds.batch_augment is not None and isinstance(ds.source.images, np.memmap)
    assert np.array_equal(
        ds[(0, 0)][0][0].permute(1, 2, 0).numpy(), FileSource.scan(tmp_path / "same", True).load_array(0)
    )

    _tree(tmp_path / "mixed")
    Image.new("RGB", (30, 20), (10, 20, 30)).save(tmp_path / "mixed" / "b" / "big.png")
    ds = pretrain_dataset(DataConfig(path=str(tmp_path / "mixed"), views=views))
    assert not ds.raw and ds.batch_augment is None and ds[(0, 0)][0][0].shape == (3, 8, 8)
    marks = [p for p in (tmp_path / "cache" / "decoded").glob("*.json") if "mixed_sizes" in p.read_text()]
    assert len(marks) == 1 and "big.png" in marks[0].read_text()
    with pytest.raises(cache.MixedSizes, match="big.png"):  # asked for explicitly: an error naming the file
        pretrain_dataset(DataConfig(path=str(tmp_path / "mixed"), augment="batched", views=views))

    monkeypatch.setattr(cache, "CACHE_SHARE", 1e-12)  # nothing fits: per image, and nothing written
    _tree(tmp_path / "large")
    before = sorted((tmp_path / "cache" / "decoded").iterdir())
    assert not pretrain_dataset(DataConfig(path=str(tmp_path / "large"), views=views)).raw
    assert sorted((tmp_path / "cache" / "decoded").iterdir()) == before
