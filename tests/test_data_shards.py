"""Tar shards: packing (deterministic, unreadable files skipped) and random-access reading, local and by URL."""

from __future__ import annotations

import json
import pickle
import shutil
import tarfile
import uuid
import warnings

import fsspec
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.io import ImageReadMode, decode_jpeg

from selfsup.config import DataConfig
from selfsup.data import ViewDataset, build_source, collate
from selfsup.data.shards import ShardSource, write_shards
from selfsup.data.sources import DataError, FileSource

# torchvision 0.29 deprecates its image decoders (for TorchCodec) with a warning on every call
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

JPEG_TOLERANCE = 2  # torchvision's and Pillow's JPEG decoders may round differently by a level or two


def _tree(root, seed=0):
    """Two classes of small non-square images: RGB and grayscale JPEGs, RGB, RGBA and palette PNGs."""
    rng = np.random.default_rng(seed)
    specs = {
        "cat": [("a.jpg", "RGB", 23, 17), ("b.png", "RGBA", 9, 14), ("c.jpeg", "L", 16, 11)],
        "dog": [("d.png", "RGB", 12, 7), ("e.jpg", "RGB", 31, 20), ("f.png", "P", 10, 13), ("g.JPG", "RGB", 8, 8)],
    }
    for cls, files in specs.items():
        (root / cls).mkdir(parents=True)
        for name, mode, w, h in files:
            arr = rng.integers(0, 256, (h, w, 4 if mode == "RGBA" else 3), dtype=np.uint8)
            img = Image.fromarray(arr).convert(mode)
            img.save(root / cls / name, quality=90)  # PNG ignores quality
    return root


@pytest.fixture
def packed(tmp_path):
    src = _tree(tmp_path / "tree")
    info = write_shards(src, tmp_path / "shards", shard_size=3, workers=1, progress=False)
    return src, tmp_path / "shards", info


def _decode_jpeg_file(path) -> np.ndarray:
    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    return decode_jpeg(data, mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()


def _assert_same_pixels(shards: ShardSource, files: FileSource) -> None:
    for i in range(len(files)):
        got, pil = shards.load_array(i), np.asarray(files.load(i))
        assert got.shape == pil.shape and got.dtype == np.uint8
        if files.files[i].suffix.lower() in (".jpg", ".jpeg"):
            assert np.array_equal(got, _decode_jpeg_file(files.files[i])), files.name(i)
            assert np.abs(got.astype(int) - pil).max() <= JPEG_TOLERANCE, files.name(i)
        else:
            assert np.array_equal(got, pil), files.name(i)
        assert np.array_equal(np.asarray(shards.load(i)), got) and shards.load(i).mode == "RGB"


def test_round_trip_pixels_labels_order_and_sizes(packed):
    src, dst, info = packed
    files, shards = FileSource.scan(src, labelled=True), ShardSource(dst)
    assert info["samples"] == len(shards) == len(files) == 7 and info["shards"] == 3 and info["skipped"] == 0
    assert shards.classes == files.classes == ["cat", "dog"]
    assert shards.labels.tolist() == files.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    for i in range(len(files)):  # the original bytes, in scan order, keyed by scan position
        assert shards.read(i) == files.files[i].read_bytes()
        assert shards.name(i) == f"shard-{i // 3:06d}.tar:{i:09d}"
    assert shards.exts.tolist() == ["jpg", "png", "jpg", "png", "jpg", "png", "jpg"]
    pil_sizes = [Image.open(f).size for f in files.files]
    assert shards.sizes.tolist() == [list(s) for s in pil_sizes] and shards.sizes[0].tolist() == [23, 17]
    _assert_same_pixels(shards, files)
    with tarfile.open(dst / "shard-000000.tar") as tar:  # the WebDataset layout
        assert tar.getnames() == [
            "000000000.jpg",
            "000000000.cls",
            "000000001.png",
            "000000001.cls",
            "000000002.jpg",
            "000000002.cls",
        ]
        assert tar.extractfile("000000001.cls").read() == b"0"


def test_unlabelled_folder_has_no_cls_members(tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    for i, size in enumerate([(5, 9), (7, 3)]):
        Image.new("RGB", size, (i * 100, 50, 25)).save(src / f"{i}.png")
    write_shards(src, tmp_path / "out", progress=False)
    shards = ShardSource(tmp_path / "out")
    assert shards.labels.tolist() == [-1, -1] and shards.classes == [] and shards.sizes.tolist() == [[5, 9], [7, 3]]
    assert shards.load_array(1)[0, 0].tolist() == [100, 50, 25]
    with tarfile.open(tmp_path / "out" / "shard-000000.tar") as tar:
        assert tar.getnames() == ["000000000.png", "000000001.png"]


def test_packing_is_deterministic_whatever_the_workers(packed, tmp_path):
    src, dst, _ = packed
    again = tmp_path / "again"
    write_shards(src, again, shard_size=3, workers=2, progress=False)  # a process pool this time
    assert (dst / "index.json").read_bytes() == (again / "index.json").read_bytes()
    tars = sorted(p.name for p in dst.glob("*.tar"))
    assert tars == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    for name in tars:
        assert (dst / name).read_bytes() == (again / name).read_bytes(), name
    index = json.loads((dst / "index.json").read_text())
    assert index["version"] == 1 and [s["samples"] for s in index["shards"]] == [3, 3, 1]
    with tarfile.open(dst / "shard-000001.tar") as tar:
        m = tar.getmember("000000004.jpg")
        assert (m.mtime, m.uid, m.gid, m.uname) == (0, 0, 0, "")
        assert index["shards"][1]["offset"][1] == m.offset_data and index["shards"][1]["size"][1] == m.size


def test_unreadable_input_files_are_skipped_and_counted(tmp_path):
    src = _tree(tmp_path / "tree")
    (src / "cat" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (src / "dog" / "empty.png").write_bytes(b"")
    png = (src / "dog" / "d.png").read_bytes()
    (src / "dog" / "half.png").write_bytes(png[: len(png) // 2])  # a header Pillow opens; verify() fails
    files = FileSource.scan(src, labelled=True)
    with pytest.warns(UserWarning, match=r"skipped 3 unreadable image\(s\) of 10: cat/broken.jpg"):
        info = write_shards(src, tmp_path / "out", shard_size=4, workers=1, progress=False)
    assert info["skipped"] == 3 and info["samples"] == 7
    assert [u.split(" ")[0] for u in info["unreadable"]] == ["cat/broken.jpg", "dog/empty.png", "dog/half.png"]
    shards = ShardSource(tmp_path / "out")
    good = [i for i in range(len(files)) if files.files[i].stem not in ("broken", "empty", "half")]
    assert shards.keys.tolist() == [f"{i:09d}" for i in good]  # keys stay the scan positions
    assert shards.labels.tolist() == files.labels[good].tolist()
    for j, i in enumerate(good):
        assert shards.read(j) == files.files[i].read_bytes()


def _member(dst, file, name):
    with tarfile.open(dst / file) as tar:
        m = tar.getmember(name)
        return m.offset_data, m.size


def test_corrupt_member_is_skipped_and_named(packed):
    _, dst, _ = packed
    off, size = _member(dst, "shard-000001.tar", "000000004.jpg")  # truncated JPEG: second half zeroed
    off2, _ = _member(dst, "shard-000000.tar", "000000001.png")  # garbled PNG header
    with open(dst / "shard-000001.tar", "r+b") as f:
        f.seek(off + size // 2)
        f.write(bytes(size - size // 2))
    with open(dst / "shard-000000.tar", "r+b") as f:
        f.seek(off2)
        f.write(b"garbage!")
    shards = ShardSource(dst)
    shards.check_shards()  # sizes are intact: only decoding can tell
    with pytest.raises(DataError, match=r"shard-000001.tar:000000004: corrupt jpg image"):
        shards.load_array(4)
    with pytest.raises(DataError, match=r"shard-000000.tar:000000001: corrupt png image"):
        shards.load(1)
    ds = ViewDataset(shards, [])  # raw uint8 items, as the batched path reads them
    views, label, skipped = ds[4]
    assert len(skipped) == 1 and skipped[0].startswith("shard-000001.tar:000000004 (DataError")
    assert torch.equal(views[0], torch.from_numpy(np.array(shards.load_array(5))).permute(2, 0, 1)) and label == 1
    assert ds[1][2][0].startswith("shard-000000.tar:000000001 (DataError") and ds[0][2] == []


def test_missing_or_truncated_shard_is_a_clear_error(packed):
    _, dst, _ = packed
    shards = ShardSource(dst)
    shards.load_array(3)  # opened before the shard goes away
    (dst / "shard-000001.tar").unlink()
    with pytest.raises(DataError, match=r"shard .*shards/shard-000001.tar is missing"):
        shards.check_shards()
    with pytest.raises(DataError, match=r"shard-000001.tar is missing"):
        build_source(DataConfig(path=str(dst)))
    with pytest.raises(DataError, match=r"cannot open shard .*shard-000001.tar"):
        ShardSource(dst).load_array(3)
    with open(dst / "shard-000002.tar", "r+b") as f:
        f.truncate(700)  # inside the one image's data
    shards = ShardSource(dst)
    with pytest.raises(DataError, match=r"shard-000002.tar:000000006: shard ends after 188 of"):
        shards.read(6)
    (dst / "shard-000000.tar").rename(dst / "keep.tar")
    with pytest.raises(DataError, match=r"shard-000000.tar is missing"):  # the first one, in index order
        shards.check_shards()
    (dst / "keep.tar").rename(dst / "shard-000000.tar")
    shutil.copy(dst / "shard-000000.tar", dst / "shard-000001.tar")
    with pytest.raises(DataError, match=r"shard-000002.tar is 700 bytes, the index needs 1[0-9]{3}: truncated"):
        shards.check_shards()
    with pytest.raises(DataError, match="no index.json"):
        ShardSource(dst / "nowhere")


def test_build_source_picks_shards(packed):
    src, dst, _ = packed
    assert isinstance(build_source(DataConfig(path=str(dst))), ShardSource)  # auto: a folder with index.json
    assert isinstance(build_source(DataConfig(path=dst.as_uri())), ShardSource)  # auto: a URL
    assert isinstance(build_source(DataConfig(source="shards", path=str(dst))), ShardSource)
    assert isinstance(build_source(DataConfig(path=str(src))), FileSource)
    with pytest.raises(DataError, match="imagefolder, folder, shards, cifar10"):
        build_source(DataConfig(source="tar", path=str(dst)))


def test_fsspec_urls_read_the_same_pixels(packed):
    _, dst, _ = packed
    local = ShardSource(dst)
    mem = fsspec.filesystem("memory")
    root = f"/selfsup-test-{uuid.uuid4().hex}"
    try:
        for p in dst.iterdir():
            mem.pipe_file(f"{root}/{p.name}", p.read_bytes())
        for url in (dst.as_uri(), f"memory://{root}"):
            remote = ShardSource(url)
            remote.check_shards()
            assert remote.labels.tolist() == local.labels.tolist() and remote.sizes.tolist() == local.sizes.tolist()
            for i in range(len(local)):
                assert np.array_equal(remote.load_array(i), local.load_array(i)), (url, i)
        mem.rm_file(f"{root}/shard-000002.tar")
        with pytest.raises(DataError, match=f"memory://{root}/shard-000002.tar is missing"):
            ShardSource(f"memory://{root}").check_shards()
    finally:
        mem.rm(root, recursive=True)


def test_pickles_for_dataloader_workers(packed):
    _, dst, _ = packed
    shards = ShardSource(dst)
    first = shards.load_array(0)  # a handle is open now: pickling must drop it
    copy = pickle.loads(pickle.dumps(shards))
    assert len(copy._handles) == 0 and np.array_equal(copy.load_array(0), first)
    inherited = shards._open(0)

    class Probe(torch.utils.data.Dataset):  # in a forked worker: a handle of its own, not the parent's
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return shards._open(0) is not inherited

    fork = DataLoader(Probe(), batch_size=None, num_workers=2, multiprocessing_context="fork")
    assert shards._open(0) is inherited and list(fork) == [True, True]
    ds = ViewDataset(shards, [])

    def items(workers):
        loader = DataLoader(ds, batch_size=1, num_workers=workers, collate_fn=collate)
        return [(b["views"][0], b["labels"].tolist()) for b in loader]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DataLoader's note that 2 workers may be many for this machine
        serial, parallel = items(0), items(2)
    assert len(serial) == len(parallel) == 7
    for (a, la), (b, lb) in zip(serial, parallel):
        assert torch.equal(a, b) and la == lb


@pytest.mark.slow
def test_real_cifar10_jpegs(cifar_dir, tmp_path):
    src = tmp_path / "cifar"
    for c in sorted(p.name for p in (cifar_dir / "test").iterdir()):
        (src / c).mkdir(parents=True)
        for f in sorted((cifar_dir / "test" / c).iterdir())[:5]:
            shutil.copy(f, src / c / f.name)
    write_shards(src, tmp_path / "out", shard_size=16, workers=1, progress=False)
    files, shards = FileSource.scan(src, labelled=True), ShardSource(tmp_path / "out")
    assert len(shards) == len(files) == 50 and len(shards.files) == 4
    assert shards.classes == files.classes and shards.labels.tolist() == files.labels.tolist()
    assert (shards.sizes == 32).all()
    _assert_same_pixels(shards, files)


@pytest.mark.parametrize("augment", ["auto", "batched"])
def test_pretraining_from_shards_resumes_bit_exactly_and_equals_the_folder_run(tmp_path, augment):
    """Pretraining reads shards through the CPU's default path (auto: every view made per image by
    OpenCV in the workers) and through the GPU's (batched: each view's crop cut per image against the
    whole image in the workers, the rest batched), here on the CPU. A run stopped mid-epoch and resumed equals the
    straight run to the last bit, and both equal the same run on the unpacked folder read from its files."""
    import selfsup.data.cache as cache
    from selfsup.app.runs import build_from_config
    from selfsup.data import OpenCVViews, pretrain_dataset
    from selfsup.train.checkpoint import load_checkpoint
    from selfsup.train.loop import fit

    from _util import tiny_config

    rng = np.random.default_rng(1)
    for i in range(20):  # non-square JPEGs of several sizes
        w, h = int(rng.integers(20, 40)), int(rng.integers(20, 40))
        (tmp_path / "tree" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            tmp_path / "tree" / f"c{i % 2}" / f"{i}.jpg"
        )
    write_shards(tmp_path / "tree", tmp_path / "shards", shard_size=6, workers=1, progress=False)
    extra = ["train.epochs=2", "train.batch_size=8", f"data.path={tmp_path / 'shards'}", f"data.augment={augment}"]
    cfg = tiny_config("simclr", extra=extra)

    def run(path, out, **kw):
        cfg.data.path = str(path)
        ds = pretrain_dataset(cfg.data)
        fit(build_from_config(cfg), ds, cfg.optim, cfg.train, out, record=cfg.to_dict(), **kw)
        return ds, load_checkpoint(out / "checkpoints" / "last.pt")["model"]

    ds, straight = run(tmp_path / "shards", tmp_path / "a")
    assert isinstance(ds.source, ShardSource) and not ds.raw
    if augment == "auto":
        assert isinstance(ds.views, OpenCVViews) and ds.batch_augment is None
    else:
        assert ds.views is None and not ds.batch_augment.crop
    run(tmp_path / "shards", tmp_path / "b", max_steps=3)  # 2 steps an epoch: stopped mid-epoch 2
    _, resumed = run(tmp_path / "shards", tmp_path / "b", resume=True)
    cache.CACHE_SHARE, share = 0.0, cache.CACHE_SHARE  # the folder read from its files, not decoded once
    try:
        folder_ds, folder = run(tmp_path / "tree", tmp_path / "c")
    finally:
        cache.CACHE_SHARE = share
    assert isinstance(folder_ds.source, FileSource)
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), f"{k} differs after resume"
        assert torch.equal(straight[k], folder[k]), f"{k} differs between shards and folder"
