"""Every view of one image, made per image in the DataLoader workers with OpenCV's uint8 kernels.

The CPU's fast path (``data.augment: opencv``, what ``auto`` picks when training on the CPU). It
draws the same random parameters as the Pillow path (:func:`~selfsup.data.views.view_transform`):
the same calls on torch's RNG, in the same order, so one sample seed gives both paths the same
crop boxes, flips, jitter factors and order, grayscale, blur and solarization choices. It then
computes the views from those parameters as torchvision's functionals define them:

- the crop is torchvision's (Pillow's antialiased resize of the box, the spec's interpolation);
- brightness, contrast and solarization are lookup tables equal to Pillow's (``ImageEnhance``,
  ``ImageOps.solarize``); grayscale is within 1 level of Pillow's, saturation within 2;
- hue is rotated in float HSV (torchvision's tensor ``adjust_hue``, within one level), not in
  Pillow's 8-bit HSV (which is up to 7 levels off that);
- blur is a true Gaussian of ``blur_kernel_frac`` of the side (untruncated with 0) with reflected
  borders (torchvision's ``gaussian_blur``, the batched path's and SimCLR's blur), where the Pillow
  path uses Pillow's box approximation;
- the result is normalized with the dataset's mean and std, as the Pillow path's last steps.

Decoding is shared by an image's views, and reduced: a JPEG is decoded at 1/2, 1/4 or 1/8 of its
size (libjpeg's DCT scaling, Pillow's ``draft``) when every view's crop box is at least that many
times its output size, so no view is upsampled that was not; the boxes are drawn against the full
image's size (from the header) and mapped onto the reduced image. ``reduce=False`` turns it off.

Per view this is about 3 times less CPU work than the Pillow path at 224 px (the benchmark in
``benchmarks/data_throughput.py``): Pillow's 8-bit HSV conversion and its blur are most of that.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..config import IMAGENET_MEAN, IMAGENET_STD, ViewSpec
from .sources import to_rgb
from .views import blur_kernel_size

_PIL_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
_cv2_threads_set = False


def available() -> bool:
    """Whether OpenCV (``opencv-python-headless``, a dependency of selfsup) can be imported."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _cv2():
    import cv2

    global _cv2_threads_set
    if not _cv2_threads_set:  # one thread per worker process: the workers are the parallelism
        cv2.setNumThreads(1)
        _cv2_threads_set = True
    return cv2


def _uniform(lo: float, hi: float) -> float:
    return torch.empty(1).uniform_(lo, hi).item()


def _coin(p: float) -> bool:
    return bool(torch.rand(1) < p)  # torchvision's RandomApply: skipped when rand >= p


def crop_params(spec: ViewSpec, height: int, width: int) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop`` parameters (top, left, height, width), drawn with the same
    torch RNG calls (``v2.RandomResizedCrop.make_params``)."""
    area = height * width
    log_ratio = (math.log(spec.ratio[0]), math.log(spec.ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(spec.scale[0], spec.scale[1])
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, size=(1,)).item())
            j = int(torch.randint(0, width - w + 1, size=(1,)).item())
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(spec.ratio):
        w, h = width, int(round(width / min(spec.ratio)))
    elif in_ratio > max(spec.ratio):
        h, w = height, int(round(height * max(spec.ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _range(value: float, center: float, clip: bool) -> tuple[float, float] | None:
    """ColorJitter's ``_check_input`` for a number: None when it does nothing."""
    lo, hi = center - value, center + value
    if clip:
        lo = max(lo, 0.0)
    return None if lo == hi == center else (lo, hi)


def draw_params(spec: ViewSpec, height: int, width: int) -> dict:
    """One view's random parameters, drawn as :func:`~selfsup.data.views.view_transform` draws them."""
    p: dict = {"box": crop_params(spec, height, width), "flip": False, "jitter": None}
    if spec.hflip_p > 0:
        p["flip"] = _coin(spec.hflip_p)
    if spec.jitter_p > 0 and _coin(spec.jitter_p):
        order = torch.randperm(4).tolist()
        ranges = [
            _range(spec.brightness, 1.0, True),
            _range(spec.contrast, 1.0, True),
            _range(spec.saturation, 1.0, True),
            _range(spec.hue, 0.0, False),
        ]
        factors = [None if r is None else _uniform(*r) for r in ranges]
        p["jitter"] = [(k, factors[k]) for k in order if factors[k] is not None]
    p["gray"] = spec.grayscale_p > 0 and _coin(spec.grayscale_p)
    p["sigma"] = None
    if spec.blur_p > 0 and _coin(spec.blur_p):
        lo, hi = spec.blur_sigma
        p["sigma"] = lo + (hi - lo) * torch.rand(()).item()  # PILGaussianBlur's draw
    p["solarize"] = spec.solarize_p > 0 and _coin(spec.solarize_p)
    return p


# ------------------------------------------------------------------------------------------------
# the operations, on (H, W, 3) uint8 RGB arrays

_LEVELS = np.arange(256, dtype=np.float32)


def _lut(values: np.ndarray) -> np.ndarray:
    # Pillow's blend: truncated towards zero and clipped to [0, 255]
    return np.clip(np.floor(values), 0, 255).astype(np.uint8)


def brightness(a: np.ndarray, f: float) -> np.ndarray:
    """Pillow's ``ImageEnhance.Brightness`` (a blend with black)."""
    return _cv2().LUT(a, _lut(_LEVELS * np.float32(f)))


def _gray(a: np.ndarray) -> np.ndarray:
    return _cv2().cvtColor(a, _cv2().COLOR_RGB2GRAY)


def contrast(a: np.ndarray, f: float) -> np.ndarray:
    """Pillow's ``ImageEnhance.Contrast``: a blend with the rounded mean of the grayscale image."""
    mean = np.float32(int(_cv2().mean(_gray(a))[0] + 0.5))
    return _cv2().LUT(a, _lut(mean + np.float32(f) * (_LEVELS - mean)))


def saturation(a: np.ndarray, f: float) -> np.ndarray:
    """Pillow's ``ImageEnhance.Color``, a blend with the grayscale image, within 2 levels (OpenCV's
    grayscale and rounding where Pillow truncates)."""
    g = _cv2().cvtColor(_gray(a), _cv2().COLOR_GRAY2RGB)
    return _cv2().addWeighted(a, f, g, 1.0 - f, 0.0)


def hue(a: np.ndarray, f: float) -> np.ndarray:
    """torchvision's ``adjust_hue`` on tensors: the hue turned by ``f`` of a circle, in float HSV
    (H in degrees; the value channel stays in 0-255, which the conversions carry through)."""
    cv2 = _cv2()
    h, s, v = cv2.split(cv2.cvtColor(a.astype(np.float32), cv2.COLOR_RGB2HSV))
    h += np.float32((f * 360.0) % 360.0)  # now in [0, 720)
    np.subtract(h, np.float32(360.0), out=h, where=h >= 360.0)
    return cv2.convertScaleAbs(cv2.cvtColor(cv2.merge((h, s, v)), cv2.COLOR_HSV2RGB))  # rounded, saturated


def grayscale(a: np.ndarray) -> np.ndarray:
    return _cv2().cvtColor(_gray(a), _cv2().COLOR_GRAY2RGB)


def gaussian_blur(a: np.ndarray, kernel: int, sigma: float) -> np.ndarray:
    """torchvision's ``gaussian_blur``: a ``kernel``-tap Gaussian of ``sigma``, reflected borders.

    Taps beyond 4 sigma are left out (at most 2 * ceil(4 sigma) + 1 of them): they hold 6e-5 of
    the kernel's weight, far below one level of 255, and cost most of the time at small sigmas."""
    cv2 = _cv2()
    k = min(kernel, 2 * math.ceil(4 * sigma) + 1)
    return cv2.GaussianBlur(a, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


_SOLARIZE = np.where(np.arange(256) < 128, np.arange(256), 255 - np.arange(256)).astype(np.uint8)


def solarize(a: np.ndarray) -> np.ndarray:
    """torchvision's ``RandomSolarize(threshold=128)``: levels of 128 and above inverted."""
    return _cv2().LUT(a, _SOLARIZE)


_JITTER = (brightness, contrast, saturation, hue)


def reduction(specs: list[ViewSpec], params: list[dict]) -> int:
    """The largest DCT scale (1, 2, 4 or 8) at which every view's crop box still holds at least its
    output size in both directions."""
    least = min(min(p["box"][2], p["box"][3]) / s.size for s, p in zip(specs, params))
    return next((k for k in (8, 4, 2) if least >= k), 1)


class OpenCVViews:
    """Callable: a (lazily opened) PIL image -> the list of its views, float ``(3, size, size)``
    each, normalized with ``mean`` and ``std``. Randomness comes from torch's RNG, which
    :class:`~selfsup.data.dataset.ViewDataset` seeds per sample."""

    def __init__(self, specs: list[ViewSpec], mean=IMAGENET_MEAN, std=IMAGENET_STD, reduce: bool = True) -> None:
        self.specs = list(specs)
        self.reduce = reduce
        self.scale = torch.tensor([1 / (255 * s) for s in std], dtype=torch.float32).view(3, 1, 1)
        self.bias = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(3, 1, 1)

    def decode(self, img: Image.Image, params: list[dict]) -> tuple[Image.Image, int]:
        """The RGB image, decoded at the largest scale reduction the views allow; and that factor."""
        k = reduction(self.specs, params) if self.reduce and img.format == "JPEG" else 1
        width = img.size[0]
        if k > 1:
            img.draft("RGB", (img.size[0] // k, img.size[1] // k))
        img.load()
        img = to_rgb(img)
        return img, (round(width / img.size[0]) if k > 1 else 1)

    def view(self, img: Image.Image, full: torch.Tensor | None, spec: ViewSpec, p: dict, k: int) -> torch.Tensor:
        top, left, h, w = p["box"]
        if k == 1:  # torchvision's resized_crop on a uint8 tensor: the box cut, then an antialiased resize
            box = full[top : top + h, left : left + w].permute(2, 0, 1)[None]
            box = box.contiguous(memory_format=torch.channels_last)  # torch's fast uint8 kernels; (H, W, 3) out
            y = F.interpolate(box, size=(spec.size, spec.size), mode=spec.interpolation, antialias=True)
            a = y[0].permute(1, 2, 0).numpy()
        else:  # the box on the image decoded at 1/k: Pillow's resize, which takes fractional boxes
            box_k = (left / k, top / k, min((left + w) / k, img.size[0]), min((top + h) / k, img.size[1]))
            a = np.array(img.resize((spec.size, spec.size), _PIL_RESAMPLE[spec.interpolation], box=box_k))
        if p["flip"]:
            a = _cv2().flip(a, 1)
        for op, f in p["jitter"] or ():
            a = _JITTER[op](a, f)
        if p["gray"]:
            a = grayscale(a)
        if p["sigma"] is not None:
            a = gaussian_blur(a, blur_kernel_size(spec), p["sigma"])
        if p["solarize"]:
            a = solarize(a)
        x = torch.from_numpy(a).permute(2, 0, 1).contiguous()
        return x.float().mul_(self.scale).add_(self.bias)

    def __call__(self, img: Image.Image) -> list[torch.Tensor]:
        width, height = img.size  # from the header
        params = [draw_params(s, height, width) for s in self.specs]
        img, k = self.decode(img, params)
        full = torch.from_numpy(np.array(img)) if k == 1 else None  # (H, W, 3), writable
        return [self.view(img, full, s, p, k) for s, p in zip(self.specs, params)]
