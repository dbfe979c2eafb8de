"""Last-layer attention and CLS maps: probabilities, grid sizes, unchanged outputs, backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raddino_lib.config import make_config
from raddino_lib.models.backbone import build_backbone, spec_from_config
from raddino_lib.models.formats import export_hf
from raddino_lib.models.registry import EncoderError, load_encoder
from raddino_lib.viz.attention import attention_figure, cls_attention, last_layer_attention

CFG = make_config("smoke")  # ViT: 32 px, patch 8, width 32, 2 blocks, heads from the preset


@pytest.fixture(scope="module")
def backbone():
    return build_backbone(spec_from_config(CFG), seed=0).eval()


def _x(n=2, s=32, seed=0):
    return torch.rand(n, 1, s, s, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("side", [32, 48])
def test_rows_sum_to_one_and_maps_have_the_grid_size(backbone, side):
    enc = load_encoder(backbone, name="mini").at_resolution(side)
    attn, prefix = last_layer_attention(enc, _x(s=side))
    g = side // 8
    heads = backbone.blocks[-1].attn.num_heads
    assert prefix == 1 and attn.shape == (2, heads, 1 + g * g, 1 + g * g)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, heads, 1 + g * g))
    maps = cls_attention(enc, _x(s=side))
    assert maps.shape == (2, heads, g, g)
    torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(2, heads))
    raw = cls_attention(enc, _x(s=side), renorm=False)
    torch.testing.assert_close(raw.flatten(2), attn[:, :, 0, 1:])


def test_probabilities_match_a_hand_computation(backbone):
    """softmax(q k^T / sqrt(d)) of the last block, from its own weights and input."""
    enc = load_encoder(backbone, name="mini")
    x = enc.preprocess.apply(_x())
    tok = backbone.norm_pre(backbone._pos_embed(backbone.patch_embed(x)))
    for blk in backbone.blocks[:-1]:
        tok = blk(tok)
    last = backbone.blocks[-1]
    a = last.attn
    y = last.norm1(tok)
    b, n, c = y.shape
    qkv = a.qkv(y).reshape(b, n, 3, a.num_heads, c // a.num_heads).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    want = ((q @ k.transpose(-2, -1)) / (c // a.num_heads) ** 0.5).softmax(-1)
    got, _ = last_layer_attention(enc, _x())
    torch.testing.assert_close(got, want.detach(), atol=1e-5, rtol=1e-4)


def test_reading_attention_changes_nothing(backbone):
    enc = load_encoder(backbone, name="mini")
    fused = [b.attn.fused_attn for b in backbone.blocks]
    before = enc.encode(_x())
    last_layer_attention(enc, _x())
    after = enc.encode(_x())
    torch.testing.assert_close(before.cls, after.cls)
    assert [b.attn.fused_attn for b in backbone.blocks] == fused
    assert not backbone.blocks[-1].attn.attn_drop._forward_hooks


def test_transformers_dinov2_agrees_with_the_native_model(backbone, tmp_path):
    folder = export_hf(backbone, tmp_path / "hf")
    hf = load_encoder(folder)
    native = load_encoder(backbone)
    impl = hf.model.config._attn_implementation
    a_hf, p_hf = last_layer_attention(hf, _x())
    a_nat, p_nat = last_layer_attention(native, _x())
    assert p_hf == p_nat == 1
    torch.testing.assert_close(a_hf, a_nat, atol=1e-4, rtol=1e-3)
    assert hf.model.config._attn_implementation == impl  # the SDPA choice is restored
    maps = cls_attention(hf.at_resolution(48), _x(s=48))
    assert maps.shape[-2:] == (6, 6)


def test_clip_tower_gives_maps(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8,
    )  # fmt: skip
    CLIPVisionModel(cfg).save_pretrained(tmp_path / "clip")
    enc = load_encoder(tmp_path / "clip")
    impl = enc.model.config._attn_implementation
    for side, g in ((32, 4), (48, 6)):
        attn, prefix = last_layer_attention(enc.at_resolution(side), _x(s=side))
        assert prefix == 1 and attn.shape == (2, 2, 1 + g * g, 1 + g * g)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, 1 + g * g))
    assert enc.model.config._attn_implementation == impl


def test_pixels_have_no_attention():
    enc = load_encoder("pixels:16")
    with pytest.raises(EncoderError, match="no self-attention"):
        cls_attention(enc, _x())


def test_attention_figure_layout(backbone):
    enc = load_encoder(backbone, name="mini")
    maps = cls_attention(enc, _x()).numpy()
    fig = attention_figure(_x()[:, 0].numpy(), {"mini": maps, "again": maps}, heads=[0])
    assert len(fig.axes) == 2 * 2 * 2  # encoders x images x (mean + one head)


def test_head_concentration_bounds():
    from raddino_lib.viz.attention import head_concentration

    uniform = torch.full((2, 3, 4, 5), 1 / 20)
    assert np.allclose(head_concentration(uniform, top=0.1), 0.1)
    peaked = torch.zeros(2, 3, 4, 5)
    peaked[..., 1, 2] = 1.0
    assert np.allclose(head_concentration(peaked), 1.0)


def test_mask_share_weights_patches_by_coverage():
    from raddino_lib.viz.attention import mask_share

    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0, 0, 0] = 1.0  # head 0: all on the top-left patch
    maps[0, 1] = 0.25  # head 1: uniform
    mask = np.zeros((1, 8, 8), bool)
    mask[0, :4, :2] = True  # half of the top-left patch
    share, area = mask_share(maps, mask)
    np.testing.assert_allclose(share, [[0.5, 0.125]])
    np.testing.assert_allclose(area, [1 / 8])


def test_region_focus_is_one_for_the_whole_image_and_head_table_shape(backbone):
    from raddino_lib.viz.attention import head_table, region_focus

    enc = load_encoder(backbone, name="mini")
    imgs = _x()[:, 0].numpy()
    whole = region_focus(enc, imgs, np.ones_like(imgs, dtype=bool))
    np.testing.assert_allclose(whole, 1.0, rtol=1e-5)
    t = head_table({"mini": whole})
    assert list(t.columns) == [f"head {i}" for i in range(len(whole))] + ["mean"]
