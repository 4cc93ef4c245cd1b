"""The GPU's path for files and shards: undecoded JPEGs from the workers, decoded in batches on the
training device (here the CPU, through the same code), crops cut there. Checked against torchvision's
per-image decode and ``resized_crop``, and through a training run that resumes bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from selfsup.config import DataConfig, ViewSpec
from selfsup.data import ShardSource, ViewDataset, collate, pretrain_dataset, resolve_decode, write_shards
from selfsup.data.batched import BatchedViews, sample_crop_boxes
from selfsup.data.device_decode import DeviceDecodedViews, Encoded, EncodedBatch, decode_batch, read_encoded
from selfsup.data.sources import DataError, FileSource


def _tree(root, n=8, png=(3,), gray=(5,)):
    rng = np.random.default_rng(0)
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(n):
        h, w = int(rng.integers(24, 60)), int(rng.integers(24, 60))
        base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)  # some structure, non-square
        if i in gray:
            img = img.convert("L")
        ext = "png" if i in png else "jpg"
        img.save(root / "ab"[i % 2] / f"{i}.{ext}")
    return root


def test_per_sample_crop_boxes_follow_each_images_size():
    spec = ViewSpec(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    sizes = torch.tensor([[32.0, 48.0], [100.0, 30.0], [20.0, 200.0]]).repeat(4000, 1)
    boxes = sample_crop_boxes(spec, len(sizes), sizes[:, 0], sizes[:, 1], torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= sizes[:, 0]).all() and (left + w <= sizes[:, 1]).all()
    for k, (hh, ww) in enumerate([(32, 48), (100, 30), (20, 200)]):
        mine = boxes[k::3]
        ref = sample_crop_boxes(spec, len(mine), hh, ww, torch.Generator().manual_seed(1))  # one size at a time
        area, ref_area = mine[:, 2] * mine[:, 3] / (hh * ww), ref[:, 2] * ref[:, 3] / (hh * ww)
        assert abs(area.mean() - ref_area.mean()) < 0.015 and abs(area.std() - ref_area.std()) < 0.015
    # torchvision's fallback by hand: no try fits a 10 x 30 image at scale 1, ratio 1 -> the centred 10 x 10
    square = ViewSpec(scale=(1.0, 1.0), ratio=(1.0, 1.0))
    fb = sample_crop_boxes(square, 2, torch.tensor([10.0, 30.0]), torch.tensor([30.0, 10.0]), torch.Generator())
    assert fb.tolist() == [[0.0, 10.0, 10.0, 10.0], [10.0, 0.0, 10.0, 10.0]]


def test_read_encoded_keeps_jpeg_bytes_and_decodes_others(tmp_path):
    src = FileSource.scan(_tree(tmp_path / "t"), labelled=True)
    for i in range(len(src)):
        e = read_encoded(src, i)
        with Image.open(src.files[i]) as img:
            assert (e.height, e.width) == (img.size[1], img.size[0])
            if src.files[i].suffix == ".jpg":
                assert e.jpeg and e.data.numpy().tobytes() == src.files[i].read_bytes()
            else:
                assert not e.jpeg and torch.equal(
                    e.data, torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
                )


def test_device_decode_equals_torchvision_per_image(tmp_path):
    """decode_jpeg on the list, boxes from the batch seed, torchvision's resized_crop per image: the
    crops equal the per-image reference within one level (torchvision's CPU kernel for uint8 rounds
    in fixed point; the device path resamples in float, as torchvision does on CUDA), and the views
    equal BatchedViews on those crops."""
    src = FileSource.scan(_tree(tmp_path / "t"), labelled=True)
    specs = [ViewSpec(size=16, count=2), ViewSpec(size=8, scale=(0.05, 0.4), interpolation="bilinear")]
    batch = EncodedBatch([read_encoded(src, i) for i in range(len(src))])
    dv = DeviceDecodedViews(specs, "cpu", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    crops = dv.crops(batch, seed=7)
    # reference: each image decoded alone (torchvision, or Pillow for the PNG), same boxes
    images = []
    for i in range(len(src)):
        if src.files[i].suffix == ".jpg":
            images.append(
                decode_jpeg(
                    torch.frombuffer(bytearray(src.files[i].read_bytes()), dtype=torch.uint8), mode=ImageReadMode.RGB
                )
            )
        else:
            images.append(torch.from_numpy(np.array(Image.open(src.files[i]).convert("RGB"))).permute(2, 0, 1))
    g = torch.Generator().manual_seed(7)
    sizes = batch.sizes
    off = []
    for v, s in enumerate(dv.specs):
        boxes = sample_crop_boxes(s, len(src), sizes[:, 0], sizes[:, 1], g).long().tolist()
        mode = TF.InterpolationMode(s.interpolation)
        for b, (top, left, h, w) in enumerate(boxes):
            ref = TF.resized_crop(images[b], top, left, h, w, [s.size, s.size], mode, antialias=True)
            d = ((crops[v][b] * 255).round() - ref.float()).abs()
            assert d.max() <= 1, (v, b)
            off.append((d > 0).float().mean())
    assert torch.stack(off).mean() < 0.3  # fixed- vs floating-point rounding: 15% of pixels measured
    views = dv([batch], seed=7)
    ref_views = BatchedViews(specs, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), crop=False)(crops, 8)
    assert len(views) == 3 and all(torch.equal(a, b) for a, b in zip(views, ref_views))


def test_undecodable_jpeg_is_named_and_replaced(tmp_path):
    src = FileSource.scan(_tree(tmp_path / "t", png=(), gray=()), labelled=True)
    items = [read_encoded(src, i) for i in range(3)]
    broken = bytearray(items[1].data.numpy().tobytes())
    broken[200:] = b"\x00" * (len(broken) - 200)  # header intact, scan data gone
    items[1] = Encoded(torch.frombuffer(broken, dtype=torch.uint8), items[1].height, items[1].width, "a/1.jpg")
    with pytest.warns(UserWarning, match="a/1.jpg"):
        out = decode_batch(EncodedBatch(items), torch.device("cpu"))
    assert torch.equal(out[1], out[0]) and out[2].shape[1:] == (items[2].height, items[2].width)


def test_auto_decodes_on_the_device_for_cuda_and_trains_resumably_from_shards(tmp_path):
    """``decode: auto`` picks the device for files and shards on CUDA, the workers elsewhere; named
    ``device`` on the CPU it runs the same code, and a run stopped mid-epoch resumes bit for bit."""
    from selfsup.app.runs import build_from_config
    from selfsup.train.checkpoint import load_checkpoint
    from selfsup.train.loop import fit

    from _util import tiny_config

    root = _tree(tmp_path / "t", n=16)
    write_shards(root, tmp_path / "shards", shard_size=5, workers=1, progress=False)
    shards = ShardSource(tmp_path / "shards")
    assert resolve_decode("auto", shards, "cuda") == "device" and resolve_decode("auto", shards, "cpu") == "workers"
    cuda_ds = pretrain_dataset(DataConfig(path=str(tmp_path / "shards"), augment="batched"), "cuda")
    assert cuda_ds.encoded and isinstance(cuda_ds.batch_augment, DeviceDecodedViews)
    with pytest.raises(DataError, match="decode"):
        pretrain_dataset(DataConfig(source="digits", augment="batched", decode="device"), "cpu")

    extra = ["train.epochs=2", "train.batch_size=4", f"data.path={tmp_path / 'shards'}"]
    cfg = tiny_config("simclr", extra=[*extra, "data.augment=batched", "data.decode=device"])

    def run(out, **kw):
        ds = pretrain_dataset(cfg.data, "cpu")
        fit(build_from_config(cfg), ds, cfg.optim, cfg.train, out, record=cfg.to_dict(), **kw)
        return ds, load_checkpoint(out / "checkpoints" / "last.pt")["model"]

    ds, straight = run(tmp_path / "a")
    assert ds.encoded and isinstance(ds.batch_augment, DeviceDecodedViews)
    batch = collate([ds[(i, 0)] for i in range(3)])
    assert isinstance(batch["views"][0], EncodedBatch) and batch["views"][0].to("cpu") is batch["views"][0]
    run(tmp_path / "b", max_steps=5)  # 4 steps an epoch: stopped in epoch 2
    _, resumed = run(tmp_path / "b", resume=True)
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    # the views differ from the workers' path only in where the same functions run
    assert not ViewDataset(shards, [], encoded=True).raw
