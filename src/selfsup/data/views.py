"""Per-view augmentation specs turned into transforms, and the evaluation transform.

A method's views are a list of :class:`~selfsup.config.ViewSpec` (each with a ``count``), so view
asymmetry (BYOL's and DINO's differently blurred views, multi-crop) is explicit in the preset.
"""

from __future__ import annotations

import math

import torch
from PIL import Image, ImageFilter
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from ..config import IMAGENET_MEAN, IMAGENET_STD, ViewSpec


def blur_kernel_size(spec: ViewSpec) -> int:
    """The odd kernel of the batched and OpenCV blurs: ``blur_kernel_frac`` of the image side
    (SimCLR: 10%, 23 px at 224), or, with ``blur_kernel_frac`` 0, untruncated: 4 sigma either side
    of the largest sigma (17 px for sigma up to 2), as Pillow's blur. Never wider than the
    reflected border allows (2 x side - 1). Pillow's blur itself needs only sigma."""
    if spec.blur_kernel_frac <= 0:
        k = 2 * math.ceil(4 * max(spec.blur_sigma)) + 1
    else:
        k = max(3, int(spec.blur_kernel_frac * spec.size))
        k = k if k % 2 == 1 else k + 1
    return min(k, 2 * spec.size - 1)


class PILGaussianBlur(torch.nn.Module):
    """Gaussian blur of a PIL image with sigma drawn uniformly from ``sigma`` (torch RNG).

    Pillow's blur, as in the official MoCo v2, BYOL-PyTorch and DINO code; several times faster on
    the CPU than a tensor convolution with a 23-pixel kernel.
    """

    def __init__(self, sigma: tuple[float, float]) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, img: Image.Image) -> Image.Image:
        lo, hi = self.sigma
        s = lo + (hi - lo) * torch.rand(()).item()
        return img.filter(ImageFilter.GaussianBlur(radius=s))


def view_transform(spec: ViewSpec, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> T.Compose:
    """PIL image -> float tensor ``(3, size, size)`` for one view of this spec, normalized with the
    dataset's ``mean`` and ``std`` (``DataConfig.mean``, ``.std``).

    The augmentations run on the PIL image (Pillow's C kernels are the fastest per-image path on a
    CPU); randomness comes from torch's RNG, which the dataset seeds per sample.
    """
    ops: list = [
        T.RandomResizedCrop(
            spec.size,
            scale=spec.scale,
            ratio=spec.ratio,
            interpolation=InterpolationMode(spec.interpolation),
            antialias=True,
        ),
    ]
    if spec.hflip_p > 0:
        ops.append(T.RandomHorizontalFlip(spec.hflip_p))
    if spec.jitter_p > 0:
        jitter = T.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)
        ops.append(T.RandomApply([jitter], p=spec.jitter_p))
    if spec.grayscale_p > 0:
        ops.append(T.RandomGrayscale(spec.grayscale_p))
    if spec.blur_p > 0:
        ops.append(T.RandomApply([PILGaussianBlur(spec.blur_sigma)], p=spec.blur_p))
    if spec.solarize_p > 0:
        ops.append(T.RandomSolarize(threshold=128, p=spec.solarize_p))
    ops += [T.PILToTensor(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    return T.Compose(ops)


def eval_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> T.Compose:
    """Resize (shorter side to size/0.875 for ImageNet-sized inputs, to ``size`` for small ones),
    centre crop, normalize: the standard evaluation pre-processing."""
    resize = int(round(size / 0.875)) if size >= 64 else size
    return T.Compose(
        [
            T.PILToTensor(),
            T.Resize(resize, interpolation=InterpolationMode.BICUBIC, antialias=True),
            T.CenterCrop(size),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean, std),
        ]
    )


def crop_transform(spec: ViewSpec) -> T.Compose:
    """The crop of one view alone, per image: torchvision's ``RandomResizedCrop`` on the whole image
    (the spec's interpolation, antialiased) to a uint8 tensor ``(3, size, size)``. The rest of the view
    (flip, colour, blur, solarization, normalization) is augmented in batches on the training device
    (``BatchedViews(..., crop=False)``): the path for images of several sizes."""
    interpolation = InterpolationMode(spec.interpolation)
    crop = T.RandomResizedCrop(spec.size, spec.scale, spec.ratio, interpolation=interpolation, antialias=True)
    return T.Compose([crop, T.PILToTensor()])


def expand_views(specs: list[ViewSpec]) -> list[ViewSpec]:
    """One spec per view, in order (``count`` repeats)."""
    return [s for s in specs for _ in range(s.count)]
