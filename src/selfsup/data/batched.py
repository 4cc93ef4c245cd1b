"""Batched view augmentation with per-sample random parameters, on the training device.

The per-image Pillow path (:mod:`selfsup.data.views`) runs in DataLoader workers, one image at a
time. Here a whole uint8 batch ``(B, 3, H, W)`` is augmented at once, on the GPU when there is one
and vectorized on the CPU otherwise, with the same distribution of views: every sample draws its
own crop box (torchvision's RandomResizedCrop algorithm), flip, colour-jitter factors and order,
grayscale, blur sigma and solarization, as the per-image ``ViewSpec`` transforms do.

Each operation matches torchvision's tensor functional of the same name for the same parameters
(tested): ``resized_crop`` (bilinear, no antialias), ``hflip``, ``adjust_brightness/contrast/
saturation/hue``, ``rgb_to_grayscale``, ``gaussian_blur`` (reflect padding), ``solarize``.
Deviation from the Pillow path: crops are resampled bilinearly without antialiasing whatever the
view's ``interpolation`` (Pillow: that interpolation with antialiasing), and blur is a true Gaussian
of ``blur_kernel_frac`` of the image side (untruncated with 0) rather than Pillow's box approximation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import IMAGENET_MEAN, IMAGENET_STD, ViewSpec
from .views import blur_kernel_size, expand_views

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


@dataclass
class ViewParams:
    """Per-sample parameters of one view for a batch of ``B`` images."""

    boxes: torch.Tensor  # (B, 4) top, left, height, width in pixels (integers, as float)
    flip: torch.Tensor  # (B,) bool
    jitter: torch.Tensor  # (B,) bool: colour jitter applied
    factors: torch.Tensor  # (B, 4) brightness, contrast, saturation, hue
    order: torch.Tensor  # (B, 4) long: the order of the four jitter ops
    gray: torch.Tensor  # (B,) bool
    blur: torch.Tensor  # (B,) bool
    sigma: torch.Tensor  # (B,)
    solarize: torch.Tensor  # (B,) bool


def _uniform(lo: float, hi: float, n: int, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def sample_crop_boxes(
    spec: ViewSpec, n: int, height: int | torch.Tensor, width: int | torch.Tensor, g: torch.Generator
) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params, for ``n`` samples at once: up to 10 tries of a
    random area fraction and log-uniform aspect ratio; otherwise the centre crop clamped to the ratio.
    ``height`` and ``width`` are one image size for all, or ``(n,)`` tensors of each image's."""
    hgt = torch.as_tensor(height, dtype=torch.float64).expand(n)[:, None]
    wid = torch.as_tensor(width, dtype=torch.float64).expand(n)[:, None]
    area = hgt * wid
    tries = 10
    target = area * _uniform(spec.scale[0], spec.scale[1], n * tries, g).view(n, tries)
    log_r = _uniform(math.log(spec.ratio[0]), math.log(spec.ratio[1]), n * tries, g).view(n, tries)
    ratio = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * ratio))
    h = torch.round(torch.sqrt(target / ratio))
    ok = (w > 0) & (h > 0) & (w <= wid) & (h <= hgt)
    u = torch.rand(n, tries, 2, generator=g, dtype=torch.float64)
    top = torch.floor(u[..., 0] * (hgt - h + 1))
    left = torch.floor(u[..., 1] * (wid - w + 1))
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    # fallback: whole image cropped to the ratio range, centred
    hgt, wid = hgt[:, 0], wid[:, 0]
    in_ratio = wid / hgt
    lo, hi = min(spec.ratio), max(spec.ratio)
    fw = torch.where(in_ratio > hi, torch.round(hgt * hi), wid)
    fh = torch.where(in_ratio < lo, torch.round(wid / lo), hgt)
    fb = torch.stack(
        [torch.div(hgt - fh, 2, rounding_mode="floor"), torch.div(wid - fw, 2, rounding_mode="floor"), fh, fw], 1
    )
    idx = first.clamp(min=0)
    pick = lambda t: t.gather(1, idx[:, None]).squeeze(1)  # noqa: E731
    boxes = torch.stack([pick(top), pick(left), pick(h), pick(w)], 1)
    return torch.where((first >= 0)[:, None], boxes, fb).float()


def sample_params(spec: ViewSpec, n: int, height: int, width: int, g: torch.Generator) -> ViewParams:
    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, generator=g) < p

    boxes = sample_crop_boxes(spec, n, height, width, g)
    flip = coin(spec.hflip_p)
    jitter = coin(spec.jitter_p)
    b, c, s, h = spec.brightness, spec.contrast, spec.saturation, spec.hue
    factors = torch.stack(
        [
            _uniform(max(0.0, 1 - b), 1 + b, n, g),
            _uniform(max(0.0, 1 - c), 1 + c, n, g),
            _uniform(max(0.0, 1 - s), 1 + s, n, g),
            _uniform(-h, h, n, g),
        ],
        1,
    ).float()
    order = torch.rand(n, 4, generator=g).argsort(1)
    gray = coin(spec.grayscale_p)
    blur = coin(spec.blur_p)
    sigma = _uniform(spec.blur_sigma[0], spec.blur_sigma[1], n, g).float()
    solarize = coin(spec.solarize_p)
    return ViewParams(boxes, flip, jitter, factors, order, gray, blur, sigma, solarize)


# ---------------------------------------------------------------------------------------------
# batched operations on float images in [0, 1], shape (B, 3, H, W); per-sample factors (B,)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its box and resize to ``size`` (bilinear, align_corners=False)."""
    n, _, hgt, wid = x.shape
    top, left, h, w = (t[:, None] for t in boxes.to(x.device, torch.float32).unbind(1))
    # output pixel centres in input pixel coordinates, clamped to the crop (as interpolating the
    # cropped image does), then normalized for grid_sample
    lin = (torch.arange(size, device=x.device, dtype=torch.float32) + 0.5) / size
    ys = torch.minimum(torch.maximum(top + lin * h - 0.5, top), top + h - 1)
    xs = torch.minimum(torch.maximum(left + lin * w - 0.5, left), left + w - 1)
    ys, xs = (2 * ys + 1) / hgt - 1, (2 * xs + 1) / wid - 1  # (B, size)
    grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), -1)  # (B, size, size, 2)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    r = ratio.view(-1, 1, 1, 1)
    return (r * a + (1.0 - r) * b).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, torch.zeros_like(x), f)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x), f)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    eq = maxc == minc
    rng = maxc - minc
    s = rng / torch.where(eq, torch.ones_like(maxc), maxc)
    d = torch.where(eq, torch.ones_like(rng), rng)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~is_r & ~is_g
    h = (bc - gc) * is_r + (2.0 + rc - bc) * is_g + (4.0 + gc - rc) * is_b
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    h6 = h * 6
    i = torch.floor(h6)
    f = h6 - i
    i = i.long() % 6
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    vpqt = torch.stack([v, p, q, t], 1)
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], device=x.device)
    return vpqt.gather(1, select[:, i].permute(1, 0, 2, 3))


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    hsv = rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + f.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], 1))


_JITTER = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def gaussian_blur(x: torch.Tensor, kernel: int, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur (separable, reflect padding), as torchvision's gaussian_blur."""
    n, c, h, w = x.shape
    half = (kernel - 1) * 0.5
    t = torch.linspace(-half, half, kernel, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma.to(x.device, x.dtype)[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c, kernel)
    pad = kernel // 2
    y = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.view(n, c, h, w)


def _where(mask: torch.Tensor, fn, x: torch.Tensor) -> torch.Tensor:
    """Apply ``fn(x[mask], idx)`` to the selected samples only."""
    idx = mask.nonzero().squeeze(1).to(x.device)
    if idx.numel() == 0:
        return x
    out = x.clone()
    out[idx] = fn(x[idx], idx.cpu())
    return out


def apply_view(
    x: torch.Tensor, spec: ViewSpec, p: ViewParams, mean=IMAGENET_MEAN, std=IMAGENET_STD, crop: bool = True
) -> torch.Tensor:
    """One view of the uint8 or [0, 1] float batch ``x`` ``(B, 3, H, W)``: float, normalized with the
    dataset's ``mean`` and ``std``. ``crop=False``: ``x`` is already the view's crop (``crop_transform``)."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    y = resized_crop(x, p.boxes, spec.size) if crop else x
    y = torch.where(p.flip.to(y.device).view(-1, 1, 1, 1), y.flip(-1), y)
    if p.jitter.any():
        for slot in range(4):
            for op in range(4):
                sel = p.jitter & (p.order[:, slot] == op)
                y = _where(sel, lambda z, i, op=op: _JITTER[op](z, p.factors[i, op].to(z.device)), y)
    y = _where(p.gray, lambda z, i: _gray(z).expand(-1, 3, -1, -1), y)
    if spec.blur_p > 0:
        k = blur_kernel_size(spec)
        y = _where(p.blur, lambda z, i: gaussian_blur(z, k, p.sigma[i]), y)
    if spec.solarize_p > 0:
        y = _where(p.solarize, lambda z, i: torch.where(z >= 0.5, 1.0 - z, z), y)
    m = torch.tensor(mean, device=y.device, dtype=y.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=y.device, dtype=y.dtype).view(1, 3, 1, 1)
    return (y - m) / s


class BatchedViews:
    """Callable ``(uint8 batch, seed) -> list of views`` for a method's view specs, normalized with the
    dataset's ``mean`` and ``std``.

    Parameters are drawn on the CPU from a generator seeded with ``seed`` (the loop derives it from
    the batch's sample seeds, so a resumed run draws the same views), then applied on the batch's
    device.

    With ``crop=False`` it takes one batch per view, each already cropped per image against the
    whole image (:func:`~selfsup.data.views.crop_transform`, in the DataLoader workers), and does
    the rest: the path for images of several sizes.
    """

    def __init__(self, specs: list[ViewSpec], mean=IMAGENET_MEAN, std=IMAGENET_STD, crop: bool = True) -> None:
        self.specs = expand_views(specs)
        self.mean, self.std, self.crop = tuple(mean), tuple(std), crop

    def __call__(self, images: torch.Tensor | list[torch.Tensor], seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        batches = [images] if isinstance(images, torch.Tensor) else list(images)
        if not self.crop and len(batches) != len(self.specs):
            raise ValueError(f"{len(batches)} cropped batches for {len(self.specs)} views")
        out = []
        for i, s in enumerate(self.specs):
            x = batches[i if not self.crop else 0]
            x = x.float().div_(255) if x.dtype == torch.uint8 else x
            n, _, h, w = x.shape
            out.append(apply_view(x, s, sample_params(s, n, h, w, g), self.mean, self.std, self.crop))
        return out
