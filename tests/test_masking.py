"""Block-wise masks (nn/masking.py) against DINOv2's generator and collate, and the mask-token encoder
(backbones/vit.py ``forward_mask_token``) against a hand-written one."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.backbones.vit import forward_mask_token
from selfsup.nn.masking import BlockMasking, batch_block_masks


class OfficialMaskingGenerator:
    """facebookresearch/dinov2 dinov2/data/masking.py, retyped (numpy mask, module-level ``random``)."""

    def __init__(self, input_size, min_num_patches=4, max_num_patches=None, min_aspect=0.3):
        self.height, self.width = input_size
        self.min_num_patches = min_num_patches
        self.max_num_patches = max_num_patches
        self.log_aspect_ratio = (math.log(min_aspect), math.log(1 / min_aspect))

    def _mask(self, mask, max_mask_patches):
        delta = 0
        for _ in range(10):
            target_area = random.uniform(self.min_num_patches, max_mask_patches)
            aspect_ratio = math.exp(random.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < self.width and h < self.height:
                top = random.randint(0, self.height - h)
                left = random.randint(0, self.width - w)
                num_masked = mask[top : top + h, left : left + w].sum()
                if 0 < h * w - num_masked <= max_mask_patches:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if mask[i, j] == 0:
                                mask[i, j] = 1
                                delta += 1
                if delta > 0:
                    break
        return delta

    def __call__(self, num_masking_patches=0):
        mask = np.zeros(shape=(self.height, self.width), dtype=bool)
        mask_count = 0
        while mask_count < num_masking_patches:
            max_mask_patches = min(num_masking_patches - mask_count, self.max_num_patches)
            delta = self._mask(mask, max_mask_patches)
            if delta == 0:
                break
            mask_count += delta
        return mask


def official_collate_masks(batch, n_tokens, mask_ratio_tuple, mask_probability, mask_generator):
    """dinov2/data/collate.py's mask part, retyped."""
    n_samples_masked = int(batch * mask_probability)
    probs = torch.linspace(*mask_ratio_tuple, n_samples_masked + 1)
    masks_list = []
    for i in range(0, n_samples_masked):
        masks_list.append(torch.BoolTensor(mask_generator(int(n_tokens * random.uniform(probs[i], probs[i + 1])))))
    for _ in range(n_samples_masked, batch):
        masks_list.append(torch.BoolTensor(mask_generator(0)))
    random.shuffle(masks_list)
    return torch.stack(masks_list).flatten(1)


def test_block_masks_equal_dinov2s_generator_seeded_alike():
    grid = (14, 14)  # ViT-S/16 at 224: DINOv2's max_num_patches = 0.5 * 196
    ours, theirs = BlockMasking(grid, max_num_patches=0.5 * 196), OfficialMaskingGenerator(grid, max_num_patches=98)
    for seed in range(40):
        num = [0, 5, 20, 59, 98, 120][seed % 6]
        random.seed(seed)
        expected = torch.from_numpy(theirs(num))
        got = ours(num, random.Random(seed))
        assert torch.equal(got, expected), (seed, num)
        assert int(got.sum()) <= num


def test_block_mask_statistics_are_the_papers():
    """Ratio: a target of 30% of 196 patches is met (blocks stop only when none fits); shape: every block
    the generator adds has area >= 4 and aspect in [0.3, 1/0.3], read from the mask of one block."""
    gen = BlockMasking(14, max_num_patches=98)
    rng = random.Random(0)
    counts = [int(gen(59, rng).sum()) for _ in range(200)]
    assert max(counts) <= 59 and np.mean(counts) > 0.97 * 59
    for _ in range(200):
        m = torch.zeros(14, 14, dtype=torch.bool)
        added = gen._add_block(m, 98, random.Random(rng.random()))
        if added:
            rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
            h, w = len(rows), len(cols)
            assert int(m.sum()) == h * w == added  # one filled rectangle
            # area >= 4 and aspect in [0.3, 1/0.3] before h, w are rounded (area 4 at aspect 0.5: 1 x 3)
            assert h * w >= 3 and 0.25 <= h / w <= 4


@pytest.mark.parametrize("batch", [8, 17])
def test_batch_masks_equal_dinov2s_collate_and_mask_half_the_images_within_their_bins(batch):
    gen, official = BlockMasking(14, max_num_patches=98), OfficialMaskingGenerator((14, 14), max_num_patches=98)
    random.seed(3)
    expected = official_collate_masks(batch, 196, (0.1, 0.5), 0.5, official)
    got = batch_block_masks(batch, gen, random.Random(3), (0.1, 0.5), 0.5)
    assert torch.equal(got, expected)
    counts = sorted(int(c) for c in got.sum(1))
    masked = [c for c in counts if c]
    assert len(masked) <= batch // 2 and counts[: batch - batch // 2] == [0] * (batch - batch // 2)
    edges = torch.linspace(0.1, 0.5, batch // 2 + 1)
    assert all(c <= int(196 * float(edges[-1])) for c in masked) and all(c >= 4 for c in masked)


def test_mask_token_encoder_replaces_masked_patches_before_the_position_embedding():
    torch.manual_seed(0)
    vit = build_backbone("vit_tiny_patch4", img_size=16, depth=2).eval()
    images = torch.randn(3, 3, 16, 16)
    token = torch.randn(vit.embed_dim)
    none = torch.zeros(3, 16, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(forward_mask_token(vit, images, none, token), vit.forward_features(images))
        masks = torch.rand(3, 16) < 0.4
        got = forward_mask_token(vit, images, masks, token)
        # by hand: patchify with the projection, replace, CLS + position embedding, blocks, norm
        x = vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
        x = torch.where(masks[..., None], token.expand_as(x), x)
        x = torch.cat([vit.cls_token.expand(3, -1, -1), x], 1) + vit.pos_embed
        ref = vit.norm(vit.blocks(x))
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        # the pixels of masked patches do not reach the output at all
        changed = images.clone()
        grid = masks.view(3, 4, 4).repeat_interleave(4, 1).repeat_interleave(4, 2)
        changed[grid[:, None].expand_as(changed)] += 5.0
        torch.testing.assert_close(forward_mask_token(vit, changed, masks, token), got)
        assert not torch.allclose(forward_mask_token(vit, changed, none, token), vit.forward_features(images))
