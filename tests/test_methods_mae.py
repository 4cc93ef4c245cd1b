"""MAE (methods/mae.py, backbones/vit.py): the masking, the loss and the whole forward against hand-written
references, the official decoder position embedding and initialization, the encoder's timm state dict,
the official weight-decay groups, and a ResNet backbone refused."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from selfsup.app.runs import build_from_config
from selfsup.backbones import build_backbone
from selfsup.backbones.vit import forward_masked, random_masking
from selfsup.methods import build_method
from selfsup.methods.mae import MAEConfig, mae_loss, mae_sincos_pos_embed, patchify
from selfsup.train.loop import fit

from _util import tiny_config, tiny_dataset

P = 4  # patch
SMALL_DECODER = ["method.decoder_embed_dim=32", "method.decoder_depth=1", "method.decoder_num_heads=2"]


def _vit(depth=2, img=16):
    torch.manual_seed(0)
    return build_backbone("vit_tiny_patch4", depth=depth, img_size=img, pos_embed="sincos", weight_init="mae")


def _mae(depth=1, img=16, **kw):
    cfg = MAEConfig(**{"decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2, **kw})
    return build_method("mae", _vit(depth, img), cfg)


def _order(noise_row):
    """Indices by increasing noise: the official keep order (argsort ascending)."""
    return sorted(range(len(noise_row)), key=lambda j: float(noise_row[j]))


# ---------------------------------------------------------------------------------------------
# the masking


@pytest.mark.parametrize("length,ratio", [(16, 0.75), (7, 0.75), (10, 0.6), (9, 0.0)])
def test_random_masking_keeps_the_lowest_noise_tokens_of_each_sample(length, ratio):
    torch.manual_seed(1)
    tokens = torch.randn(3, length, 5)
    noise = torch.rand(3, length)
    kept, mask, ids_restore = random_masking(tokens, ratio, noise)
    keep = int(length * (1 - ratio))  # the official truncation: 7 * 0.25 -> 1
    assert kept.shape == (3, keep, 5)
    for i in range(3):
        order = _order(noise[i])
        for k in range(keep):
            assert torch.equal(kept[i, k], tokens[i, order[k]])
        assert mask[i].tolist() == [0.0 if j in order[:keep] else 1.0 for j in range(length)]
        # ids_restore inverts the shuffle: [kept, removed][ids_restore] is the original order
        shuffled = tokens[i, order]
        assert torch.equal(shuffled[ids_restore[i]], tokens[i])
        assert [order[int(r)] for r in ids_restore[i]] == list(range(length))
    assert mask.sum(1).tolist() == [float(length - keep)] * 3


def test_random_masking_draws_a_different_set_per_sample():
    torch.manual_seed(0)
    tokens = torch.arange(16.0)[None, :, None].expand(8, 16, 1)
    kept, mask, _ = random_masking(tokens, 0.75)
    assert mask.mean().item() == 0.75
    sets = {tuple(sorted(int(v) for v in kept[i, :, 0])) for i in range(8)}
    assert len(sets) > 1
    for i in range(8):  # the kept tokens are the unmasked places
        assert sorted(int(v) for v in kept[i, :, 0]) == [j for j in range(16) if mask[i, j] == 0]


def _hand_patch_embed(vit, images):
    """The patch projection as a matrix product over (channel, row, column)-flattened patches."""
    n, c, h, w = images.shape
    w_ = vit.patch_embed.proj.weight.reshape(vit.embed_dim, -1)
    rows = []
    for i in range(h // P):
        for j in range(w // P):
            patch = images[:, :, i * P : (i + 1) * P, j * P : (j + 1) * P].reshape(n, -1)
            rows.append(patch @ w_.T + vit.patch_embed.proj.bias)
    return torch.stack(rows, 1)


def test_forward_masked_is_the_official_encoder_on_the_kept_patches():
    vit = _vit().eval()
    torch.manual_seed(2)
    images = torch.randn(3, 3, 16, 16)
    noise = torch.rand(3, 16)
    with torch.no_grad():
        tokens, mask, _ = forward_masked(vit, images, 0.75, noise)
        # official forward_encoder: embed, + pos_embed[:, 1:], keep per sample, CLS + pos_embed[:, 0] in front
        x = _hand_patch_embed(vit, images) + vit.pos_embed[:, 1:]
        for i in range(3):
            order = _order(noise[i])
            seq = torch.cat([vit.cls_token[0] + vit.pos_embed[0, :1], x[i, order[:4]]])[None]
            for blk in vit.blocks:
                seq = blk(seq)
            torch.testing.assert_close(tokens[i], vit.norm(seq)[0], rtol=1e-5, atol=1e-5)
        # nothing masked, tokens in place: the backbone's own forward, whose CLS token evaluation uses
        full, mask0, _ = forward_masked(vit, images, 0.0, torch.arange(16.0).expand(3, 16))
        torch.testing.assert_close(full, vit.forward_features(images))
        torch.testing.assert_close(full[:, 0], vit(images))
    assert mask0.sum() == 0 and mask.sum().item() == 3 * 12


# ---------------------------------------------------------------------------------------------
# the loss


def _hand_patchify(images):
    n, c, h, w = images.shape
    g = h // P
    out = torch.zeros(n, g * g, P * P * c)
    for b in range(n):
        for i in range(g):
            for j in range(g):
                for r in range(P):
                    for q in range(P):
                        for ch in range(c):
                            out[b, i * g + j, (r * P + q) * c + ch] = images[b, ch, i * P + r, j * P + q]
    return out


def ref_mae_loss(pred, target, mask, norm_pix):
    """Loops over samples and patches: per-patch (unbiased) standardization with eps 1e-6 on the
    variance, squared error averaged over the patch, then averaged over the removed patches only."""
    total, count = 0.0, 0
    for b in range(pred.shape[0]):
        for k in range(pred.shape[1]):
            if mask[b, k] != 1:
                continue
            t = [float(v) for v in target[b, k]]
            if norm_pix:
                mean = sum(t) / len(t)
                var = sum((v - mean) ** 2 for v in t) / (len(t) - 1)
                t = [(v - mean) / math.sqrt(var + 1e-6) for v in t]
            total += sum((float(p) - v) ** 2 for p, v in zip(pred[b, k], t)) / len(t)
            count += 1
    return total / count


def test_patchify_is_the_official_layout():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 8, 8)
    assert torch.equal(patchify(images, P), _hand_patchify(images))
    with pytest.raises(ValueError, match="square"):
        patchify(torch.randn(1, 3, 8, 12), P)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_matches_a_loop_over_samples_and_patches(norm_pix):
    torch.manual_seed(3)
    pred, target = torch.randn(3, 6, 12), 2 * torch.randn(3, 6, 12) + 0.5
    mask = (torch.rand(3, 6) < 0.6).float()
    mask[0, 0] = 1
    got = mae_loss(pred, target, mask, norm_pix)
    assert got.item() == pytest.approx(ref_mae_loss(pred, target, mask, norm_pix), rel=1e-5)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_only_removed_patches_contribute(norm_pix):
    torch.manual_seed(4)
    pred, target = torch.randn(2, 8, 12), torch.randn(2, 8, 12)
    mask = torch.tensor([[1.0, 0, 1, 0, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0, 0, 1]])
    base = mae_loss(pred, target, mask, norm_pix)
    moved = target.clone()
    moved[mask == 0] = 100 * torch.randn(int((mask == 0).sum()), 12)  # every visible patch's target
    assert mae_loss(pred, moved, mask, norm_pix).item() == base.item()
    moved = target.clone()
    moved[0, 2] = 3 * torch.randn(12)  # one removed patch's target
    assert mae_loss(pred, moved, mask, norm_pix).item() != pytest.approx(base.item(), rel=1e-3)


# ---------------------------------------------------------------------------------------------
# the method


def ref_pos_embed(grid, dim):
    """util/pos_embed.py: CLS row 0, then per patch (row i, column j) sin, cos of j, then sin, cos of i,
    at frequencies 10000 ** (-f / (dim / 4))."""
    q = dim // 4
    out = torch.zeros(1 + grid * grid, dim, dtype=torch.float64)
    for i in range(grid):
        for j in range(grid):
            for f in range(q):
                omega = 1.0 / 10000 ** (f / q)
                row = 1 + i * grid + j
                out[row, f], out[row, q + f] = math.sin(j * omega), math.cos(j * omega)
                out[row, 2 * q + f], out[row, 3 * q + f] = math.sin(i * omega), math.cos(i * omega)
    return out.float()


def test_decoder_position_embedding_is_the_official_fixed_sincos():
    torch.testing.assert_close(mae_sincos_pos_embed(3, 16), ref_pos_embed(3, 16))
    method = _mae()
    torch.testing.assert_close(method.decoder_pos_embed[0], ref_pos_embed(4, 32))
    assert "decoder_pos_embed" not in dict(method.named_parameters())
    assert "decoder_pos_embed" not in method.state_dict()  # fixed: recomputed, not stored
    # other grids: the embedding of that grid
    torch.testing.assert_close(method._pos_embed(2)[0], ref_pos_embed(2, 32))


def test_forward_matches_a_hand_written_mae_and_only_removed_patches_get_gradient():
    method = _mae(depth=1).eval()
    torch.manual_seed(5)
    images = torch.randn(3, 3, 16, 16)
    torch.manual_seed(6)
    out = method([images])
    torch.manual_seed(6)
    noise = torch.rand(3, 16)  # the draw the method made
    with torch.no_grad():
        tokens, mask, _ = forward_masked(method.backbone, images, 0.75, noise)
        x = method.decoder_embed(tokens)
        pos = ref_pos_embed(4, 32)
        preds = []
        for i in range(3):
            order = _order(noise[i])
            seq = [x[i, 0]]  # CLS, then each patch in place: its encoder token if kept, else the mask token
            seq += [x[i, 1 + order.index(j)] if j in order[:4] else method.mask_token[0, 0] for j in range(16)]
            s = torch.stack(seq)[None] + pos
            for blk in method.decoder_blocks:
                s = blk(s)
            preds.append(method.decoder_pred(method.decoder_norm(s))[0, 1:])
        pred = torch.stack(preds)
    want = ref_mae_loss(pred, _hand_patchify(images), mask, norm_pix=True)
    assert out.loss.item() == pytest.approx(want, rel=1e-5)
    assert set(out.logs) == {"mask_ratio"} and out.logs["mask_ratio"].item() == 0.75

    # gradient reaches the predictions of removed patches only
    torch.manual_seed(6)
    tokens, mask, ids_restore = forward_masked(method.backbone, images, 0.75)
    pred = method.decode(tokens, ids_restore, 4)
    pred.retain_grad()
    mae_loss(pred, patchify(images, P), mask).backward()
    per_patch = pred.grad.abs().sum(-1)
    assert (per_patch[mask == 0] == 0).all() and (per_patch[mask == 1] > 0).all()


def test_mae_initialization():
    method = _mae(depth=1)
    vit = method.backbone
    d = vit.embed_dim
    qkv = vit.blocks[0].attn.qkv.weight  # (3d, d), xavier-uniform as one matrix
    bound = math.sqrt(6 / (4 * d))  # Q, K and V separately (MoCo's) would reach sqrt(6 / (2d))
    assert 0.95 * bound < qkv.abs().max() <= bound
    fc1 = vit.blocks[0].mlp.fc1.weight
    assert fc1.abs().max() <= math.sqrt(6 / (5 * d)) and torch.equal(vit.blocks[0].mlp.fc1.bias, torch.zeros(4 * d))
    proj, bound = vit.patch_embed.proj.weight, math.sqrt(6 / (3 * P * P + d))  # as a linear layer
    assert 0.9 * bound < proj.abs().max() <= bound
    assert 0.015 < vit.cls_token.std().item() < 0.025 and 0.01 < method.mask_token.std().item() < 0.03
    assert not vit.pos_embed.requires_grad
    pred = method.decoder_pred.weight
    assert pred.abs().max() <= math.sqrt(6 / (32 + 3 * P * P)) and torch.equal(
        method.decoder_pred.bias, torch.zeros(48)
    )


def test_encoder_state_dict_loads_into_plain_timm():
    method = build_from_config(tiny_config("mae", extra=SMALL_DECODER))
    ours = method.encoder.state_dict()
    assert set(ours) == {k.removeprefix("backbone.") for k in method.state_dict() if k.startswith("backbone.")}
    plain = VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=2, num_heads=3, num_classes=0)
    plain.load_state_dict(ours)  # strict: timm's names and shapes
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), method.encoder.eval()(x))


def test_param_groups_are_the_official_add_weight_decay():
    """timm 0.3.2 add_weight_decay as MAE calls it (no skip list): 1-D parameters and biases undecayed,
    the CLS and mask tokens decayed, the fixed position embedding not optimized."""
    method = _mae(depth=1)
    names = {id(p): n for n, p in method.named_parameters()}
    groups = method.param_groups()
    decayed = {names[id(p)] for g in groups if g.get("weight_decay", None) != 0.0 for p in g["params"]}
    undecayed = {names[id(p)] for g in groups if g.get("weight_decay", None) == 0.0 for p in g["params"]}
    norms = {n for n in names.values() if n.split(".")[-2:-1] in (["norm"], ["norm1"], ["norm2"], ["decoder_norm"])}
    assert undecayed == {n for n in names.values() if n.endswith(".bias")} | norms
    assert {"backbone.cls_token", "mask_token", "backbone.patch_embed.proj.weight"} <= decayed
    assert "backbone.blocks.0.attn.qkv.weight" in decayed and "decoder_blocks.0.mlp.fc2.weight" in decayed
    assert "backbone.pos_embed" not in decayed | undecayed
    assert decayed | undecayed | {"backbone.pos_embed"} == set(names.values())


def test_a_resnet_backbone_is_refused():
    with pytest.raises(ValueError, match="MAE needs a ViT backbone"):
        build_method("mae", build_backbone("resnet10"), MAEConfig())


def test_no_collapse_warning_without_z_std(tmp_path):
    """The loop's collapse watch reads logs['z_std'], which MAE does not log: a threshold any value would
    fall under, with a window of one record, stays silent."""
    cfg = tiny_config("mae", extra=[*SMALL_DECODER, "train.collapse_threshold=1e9", "train.collapse_window=1"])
    method = build_from_config(cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit(method, tiny_dataset(cfg, 16), cfg.optim, cfg.train, tmp_path, record=cfg.to_dict())
    assert res.steps == 2 and math.isfinite(res.loss)
    assert not [w for w in caught if "collapse" in str(w.message)]
