"""JPEGs decoded in batches on the training device (nvJPEG on CUDA), their views cut and augmented there.

The GPU's path for images of several sizes read from files or shards (``data.decode: auto`` with a
CUDA training device). The DataLoader workers only read each sample's bytes and its size from the
header (:class:`Encoded`); the training process decodes the batch's JPEGs with one
``torchvision.io.decode_jpeg(list, device=...)`` call (batched nvJPEG on CUDA; libjpeg-turbo on the
CPU, where this path is tested), cuts every view's crop from the whole image (torchvision's
``RandomResizedCrop`` algorithm against each image's own size, then torchvision's antialiased
``resized_crop`` on the decoded tensor) and hands the crops to
:class:`~selfsup.data.batched.BatchedViews` for the rest (flip, colour, blur, solarization).

Other formats (PNG, WebP...) are decoded by Pillow in the workers and sent as pixels. A JPEG the
device decoder rejects is decoded by Pillow in the training process; one nobody can decode is
replaced by the batch's first readable image, and named in a warning, so batch shapes stay equal
across ranks. Randomness comes from the batch's seed (the loop derives it from the batch's position),
so a resumed run draws the views of an uninterrupted one.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from ..config import IMAGENET_MEAN, IMAGENET_STD, ViewSpec
from .batched import BatchedViews, sample_crop_boxes
from .sources import JPEG_MAGIC, to_rgb
from .views import expand_views


@dataclass
class Encoded:
    """One sample as the workers send it: the JPEG's bytes (1-D uint8), or pixels ``(3, H, W)``
    uint8 for other formats; its height and width; its name (for errors)."""

    data: torch.Tensor
    height: int
    width: int
    name: str

    @property
    def jpeg(self) -> bool:
        return self.data.dim() == 1


def read_encoded(source, i: int) -> Encoded:
    """Sample ``i`` of ``source`` (a :class:`FileSource` or :class:`ShardSource`) without decoding a
    JPEG: its bytes and the size in its header. Raises on a file that is not an image."""
    data = source.read(i)
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if data[:3] == JPEG_MAGIC and img.mode in ("RGB", "L"):  # nvJPEG: baseline/progressive RGB and gray
            return Encoded(torch.frombuffer(bytearray(data), dtype=torch.uint8), h, w, source.name(i))
        return Encoded(_pixels(img), h, w, source.name(i))


class EncodedBatch:
    """The samples of one batch, left on the host: ``decode_jpeg`` reads its input from host memory
    whatever the device it decodes on, so the loop's ``.to(device)`` and pinning leave it as it is."""

    def __init__(self, items: list[Encoded]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def to(self, *args, **kwargs) -> EncodedBatch:
        return self

    def pin_memory(self, *args, **kwargs) -> EncodedBatch:
        return self

    @property
    def sizes(self) -> torch.Tensor:
        """``(B, 2)`` height, width."""
        return torch.tensor([(e.height, e.width) for e in self.items], dtype=torch.float64)


def _pixels(img: Image.Image) -> torch.Tensor:
    """A Pillow image decoded, as RGB ``(3, H, W)`` uint8."""
    img.load()
    return torch.from_numpy(np.array(to_rgb(img))).permute(2, 0, 1).contiguous()


def _pil_decode(e: Encoded) -> torch.Tensor:
    with Image.open(io.BytesIO(e.data.numpy().tobytes())) as img:
        return _pixels(img)


def _decode_jpeg(data, device: torch.device):
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders (for TorchCodec), per call
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def decode_batch(batch: EncodedBatch, device: torch.device) -> list[torch.Tensor]:
    """Every sample as ``(3, H, W)`` uint8 on ``device``: JPEGs in one batched ``decode_jpeg`` call."""
    out: list[torch.Tensor | None] = [None] * len(batch)
    jpegs = [k for k, e in enumerate(batch.items) if e.jpeg]
    for k, e in enumerate(batch.items):
        if not e.jpeg:
            out[k] = e.data.to(device, non_blocking=True)
    if jpegs:
        data = [batch.items[k].data for k in jpegs]
        try:
            decoded = _decode_jpeg(data, device)
        except RuntimeError:  # one bad file fails the whole call: decode one by one
            decoded = []
            for k in jpegs:
                try:
                    decoded.append(_decode_jpeg(batch.items[k].data, device))
                except RuntimeError:
                    decoded.append(None)
        for k, x in zip(jpegs, decoded):
            if x is None:
                try:
                    x = _pil_decode(batch.items[k]).to(device)
                except Exception:  # noqa: BLE001 - any decoder error means "unreadable"
                    x = None
            out[k] = x
    bad = [k for k, x in enumerate(out) if x is None]
    if bad:
        good = next((x for x in out if x is not None), None)
        names = ", ".join(batch.items[k].name for k in bad)
        if good is None:
            raise RuntimeError(f"no image of the batch could be decoded: {names}")
        warnings.warn(f"skipped undecodable image(s) {names}: the batch's first image stands in", stacklevel=2)
        for k in bad:
            out[k] = good
            batch.items[k] = Encoded(batch.items[k].data, good.shape[1], good.shape[2], batch.items[k].name)
    return out  # type: ignore[return-value]


def crop_views(images: list[torch.Tensor], spec: ViewSpec, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box (top, left, height, width) cut and resized to ``spec.size``: torchvision's
    ``resized_crop`` on a uint8 tensor (the spec's interpolation, antialiased, rounded to uint8),
    returned as float in [0, 1], ``(B, 3, size, size)``."""
    size = spec.size
    out = torch.empty((len(images), 3, size, size), dtype=torch.float32, device=images[0].device)
    for b, (img, box) in enumerate(zip(images, boxes.long().tolist())):
        top, left, h, w = box
        crop = img[None, :, top : top + h, left : left + w].float()
        out[b] = F.interpolate(crop, size=(size, size), mode=spec.interpolation, antialias=True)[0]
    return out.round_().clamp_(0, 255).div_(255)


class DeviceDecodedViews:
    """Callable ``([EncodedBatch], seed) -> list of views`` on ``device``: decode, crop, augment.

    The crop boxes come from a generator seeded with ``seed``; the rest of each view from
    :class:`BatchedViews` (``crop=False``) seeded with ``seed + 1``."""

    def __init__(self, specs: list[ViewSpec], device: torch.device | str, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.specs = expand_views(specs)
        self.device = torch.device(device)
        self.rest = BatchedViews(specs, mean, std, crop=False)

    def crops(self, batch: EncodedBatch, seed: int) -> list[torch.Tensor]:
        """The crop of every view, float in [0, 1] on the device, one ``(B, 3, size, size)`` per view."""
        images = decode_batch(batch, self.device)
        sizes = batch.sizes
        g = torch.Generator().manual_seed(seed)
        n = len(batch)
        return [crop_views(images, s, sample_crop_boxes(s, n, sizes[:, 0], sizes[:, 1], g)) for s in self.specs]

    def __call__(self, views: list, seed: int) -> list[torch.Tensor]:
        (batch,) = views
        return self.rest(self.crops(batch, seed), (seed + 1) % 2**63)
