"""Block-wise patch masks, as BEiT, iBOT and DINOv2 draw them for masked image modelling.

:class:`BlockMasking` is the masking generator of BEiT (Bao et al. 2021, arXiv:2106.08254, Algorithm 1),
in DINOv2's version (facebookresearch/dinov2 ``dinov2/data/masking.py``): rectangles of a random area
(at least ``min_num_patches``, at most what is left to mask and ``max_num_patches``) and a log-uniform
aspect ratio in ``[min_aspect, 1 / min_aspect]`` are added until ``num`` patches are masked (or ten
tries in a row add nothing). :func:`batch_block_masks` is DINOv2's collate (``dinov2/data/collate.py``):
a share ``probability`` of the images is masked, image ``i`` of them with a ratio drawn uniformly in the
``i``-th of equal bins of ``ratio_min_max``, the others not at all, and the masks are shuffled.

:func:`ibot_masks` is iBOT's (Zhou et al. 2021, arXiv:2111.07832; bytedance/ibot ``loader.py:33-116``): every
image gets its own ratio (``pred_ratio`` +- ``pred_ratio_var``, one of several candidates at random), a float
patch target, and BEiT blocks of at least ``(min(h, w) // 3) ** 2`` patches; ``pred_shape='rand'`` masks
``int(target)`` patches at random places instead.

The methods draw masks from :func:`step_rng`, seeded by the run's seed, the step and the rank, so a resumed
run draws the masks of an uninterrupted one.

The draws come from a ``random.Random`` the caller seeds (the official code uses the global ``random``
module in each DataLoader worker), in the official order, so a seeded run is reproducible and equals
the official generator seeded alike.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch


class BlockMasking:
    """Block-wise masks over a ``grid`` ``(h, w)`` of patches (DINOv2's ``MaskingGenerator``)."""

    def __init__(
        self,
        grid: int | tuple[int, int],
        min_num_patches: int = 4,
        max_num_patches: float | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
    ) -> None:
        self.height, self.width = (grid, grid) if isinstance(grid, int) else grid
        self.num_patches = self.height * self.width
        self.min_num_patches = min_num_patches
        self.max_num_patches = self.num_patches if max_num_patches is None else max_num_patches
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))

    def _add_block(self, mask: torch.Tensor, budget: float, rng: random.Random) -> int:
        """One rectangle that masks 1 to ``budget`` new patches (ten tries); the patches it added."""
        for _ in range(10):
            area = rng.uniform(self.min_num_patches, budget)
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if w < self.width and h < self.height:
                top = rng.randint(0, self.height - h)
                left = rng.randint(0, self.width - w)
                block = mask[top : top + h, left : left + w]
                new = h * w - int(block.sum())
                if 0 < new <= budget:
                    block.fill_(True)
                    return new
        return 0

    def __call__(self, num: float, rng: random.Random) -> torch.Tensor:
        """A ``(h, w)`` bool mask with at most ``num`` patches set (fewer when no block fits); ``num`` may be
        fractional (iBOT's target ``ratio * h * w``: blocks are added while fewer are masked)."""
        mask = torch.zeros(self.height, self.width, dtype=torch.bool)
        count = 0
        while count < num:
            added = self._add_block(mask, min(num - count, self.max_num_patches), rng)
            if added == 0:
                break
            count += added
        return mask


def batch_block_masks(
    batch: int,
    generator: BlockMasking,
    rng: random.Random,
    ratio_min_max: tuple[float, float] = (0.1, 0.5),
    probability: float = 0.5,
) -> torch.Tensor:
    """``(batch, h * w)`` bool masks as DINOv2's collate draws them: ``int(batch * probability)`` masked
    images, the ``i``-th with ``int(N * u)`` patches, ``u`` uniform in the ``i``-th of that many equal
    bins of ``ratio_min_max``; the rest unmasked; in a random order."""
    n = generator.num_patches
    masked = int(batch * probability)
    edges = torch.linspace(ratio_min_max[0], ratio_min_max[1], masked + 1)  # float32, as the official
    masks = [generator(int(n * rng.uniform(edges[i], edges[i + 1])), rng) for i in range(masked)]
    masks += [generator(0, rng) for _ in range(masked, batch)]
    rng.shuffle(masks)
    return torch.stack(masks).flatten(1)


def step_rng(seed: int, step: int, rank: int) -> random.Random:
    """The mask generator of one training step on one rank (string seeds are hashed by SHA-512: stable)."""
    return random.Random(f"selfsup-masks:{seed}:{step}:{rank}")


def ibot_ratio(rng: random.Random, ratios: Sequence[float], variations: Sequence[float]) -> float:
    """iBOT's ``get_pred_ratio`` (loader.py:33-49): each candidate ``uniform(r - v, r + v)`` (``r`` when
    ``v`` is 0), then one of them at random (a single candidate is taken as it is)."""
    if len(variations) == 1 and len(ratios) > 1:
        variations = list(variations) * len(ratios)
    if len(ratios) != len(variations):
        raise ValueError(f"pred_ratio {list(ratios)} and pred_ratio_var {list(variations)} differ in length")
    drawn = []
    for r, v in zip(ratios, variations):
        if v > r:
            raise ValueError(f"pred_ratio_var {v} is larger than its pred_ratio {r}")
        drawn.append(rng.uniform(r - v, r + v) if v > 0 else r)
    return drawn[0] if len(drawn) == 1 else rng.choice(drawn)


def ibot_masks(
    batch: int,
    grid: tuple[int, int],
    rng: random.Random,
    ratios: Sequence[float] = (0.3,),
    variations: Sequence[float] = (0.0,),
    shape: str = "block",
) -> torch.Tensor:
    """``(batch, h * w)`` bool masks as iBOT's ``ImageFolderMask`` draws them for one crop of each image."""
    h, w = grid
    blocks = BlockMasking(grid, min_num_patches=(min(h, w) // 3) ** 2)
    out = []
    for _ in range(batch):
        target = ibot_ratio(rng, ratios, variations) * h * w
        if shape == "block":
            out.append(blocks(target, rng).flatten())
        elif shape == "rand":
            mask = torch.zeros(h * w, dtype=torch.bool)
            mask[rng.sample(range(h * w), int(target))] = True
            out.append(mask)
        else:
            raise ValueError(f"method.pred_shape: {shape!r} is not 'block' or 'rand'")
    return torch.stack(out)
