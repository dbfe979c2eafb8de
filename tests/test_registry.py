"""Encoder registry: every backend gives CLS + patch grid (+ layers) with its own preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raddino_lib.config import make_config
from raddino_lib.models.backbone import build_backbone, spec_from_config
from raddino_lib.models.formats import export_hf
from raddino_lib.models.registry import (
    EncoderError,
    HFCLIPEncoder,
    HFDinov2Encoder,
    Preprocess,
    ViTEncoder,
    load_encoder,
)

CFG = make_config("smoke")  # ViT: 32 px, patch 8, width 32, 2 blocks


@pytest.fixture(scope="module")
def backbone():
    return build_backbone(spec_from_config(CFG), seed=0).eval()


@pytest.fixture(scope="module")
def dinov2_folder(tmp_path_factory, backbone) -> Path:
    return Path(export_hf(backbone, tmp_path_factory.mktemp("hf") / "rad-dino-mini"))


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("clip") / "clip-vit"
    cfg = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8,
    )  # fmt: skip
    CLIPVisionModel(cfg).save_pretrained(out)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    ).save_pretrained(out)  # fmt: skip
    return out


def _x(n=2, s=32, seed=0):
    return torch.rand(n, 1, s, s, generator=torch.Generator().manual_seed(seed))


def test_native_encoder_matches_backbone_and_returns_layers(backbone):
    enc = load_encoder(backbone, name="mini")
    assert isinstance(enc, ViTEncoder)
    out = enc.encode(_x(), layers=(0, -1))
    ref = backbone.forward_tokens(_x())
    torch.testing.assert_close(out.cls, ref["cls"])
    torch.testing.assert_close(out.patches, ref["patches"].reshape(2, 4, 4, 32))
    assert [t.shape for t in out.layers] == [(2, 4, 4, 32)] * 2
    torch.testing.assert_close(out.layers[1], out.patches)  # last block + final norm


@pytest.mark.parametrize("side,grid", [(32, 4), (48, 6)])
def test_dinov2_folder_shapes_at_two_resolutions(dinov2_folder, backbone, side, grid):
    enc = load_encoder(dinov2_folder, image_size=side)
    assert isinstance(enc, HFDinov2Encoder)
    assert enc.preprocess.image_size == side and enc.preprocess.channels == 3
    out = enc.encode(_x(s=side), layers=(0,))
    assert out.cls.shape == (2, 32)
    assert out.patches.shape == (2, grid, grid, 32)
    assert out.layers[0].shape == (2, grid, grid, 32)
    if side == 32:  # transformers' Dinov2Model on our exported weights = our ViT
        torch.testing.assert_close(out.cls, backbone.forward_tokens(_x())["cls"], atol=1e-5,
                                   rtol=1e-5)  # fmt: skip


def test_dinov2_preprocessing_comes_from_the_folder(dinov2_folder):
    proc = json.loads((dinov2_folder / "preprocessor_config.json").read_text())
    enc = load_encoder(dinov2_folder)
    assert enc.preprocess.mean == tuple(proc["image_mean"])
    assert enc.preprocess.std == tuple(proc["image_std"])


@pytest.mark.parametrize("side,grid", [(32, 4), (64, 8)])
def test_clip_folder_shapes_and_own_preprocessing(clip_folder, side, grid):
    enc = load_encoder(clip_folder, image_size=side)
    assert isinstance(enc, HFCLIPEncoder)
    assert enc.preprocess.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    out = enc.encode(_x(s=side), layers=(1,))
    assert out.cls.shape == (2, 32) and out.patches.shape == (2, grid, grid, 32)
    assert out.layers[0].shape == (2, grid, grid, 32)
    # CLS is CLIP's pooled output (post-LayerNorm class token)
    with torch.no_grad():
        ref = enc.model(pixel_values=enc.preprocess.apply(_x(s=side)),
                        interpolate_pos_encoding=side != 32).pooler_output  # fmt: skip
    torch.testing.assert_close(out.cls, ref)


def test_timm_weights_file_round_trip(tmp_path):
    from safetensors.torch import save_file

    a = load_encoder("timm:vit_tiny_patch16_224")
    w = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in a.model.state_dict().items()}, str(w))
    b = load_encoder(f"timm:vit_tiny_patch16_224={w}")
    x = _x(1, 64)
    oa, ob = a.encode(x, layers=(-1,)), b.encode(x, layers=(-1,))
    assert oa.cls.shape == (1, 192) and oa.patches.shape == (1, 14, 14, 192)
    torch.testing.assert_close(oa.cls, ob.cls)
    assert a.identity() == b.identity()
    assert a.preprocess.image_size == 224 and a.preprocess.mean == pytest.approx(
        tuple(a.model.pretrained_cfg["mean"])
    )


def test_timm_cnn_gives_pooled_cls_and_feature_grid():
    enc = load_encoder("timm:resnet18")
    out = enc.encode(_x(1, 64))
    assert out.patches.shape == (1, 7, 7, 512)
    torch.testing.assert_close(out.cls, out.patches.mean((1, 2)))


def test_random_and_pixels_sources():
    a, b = load_encoder("random", cfg=CFG, seed=0), load_encoder("random", cfg=CFG, seed=0)
    c = load_encoder("random", cfg=CFG, seed=1)
    assert a.identity() == b.identity() != c.identity()
    pix = load_encoder("pixels:8")
    x = _x(3, 32)
    out = pix.encode(x)
    assert out.cls.shape == (3, 64) and out.patches.shape == (3, 8, 8, 1)
    down = torch.nn.functional.interpolate(x, size=(8, 8), mode="bicubic", antialias=True)
    torch.testing.assert_close(out.cls, ((down.clamp(0, 1) - 0.5) / 0.25).flatten(1))


def test_blank_encoder_gives_zero_tokens_of_its_geometry():
    """The report chapter's no-image row: zeros of the stated token grid and width, any input."""
    enc = load_encoder("blank:32:8:12", name="nothing")
    out = enc.encode(_x(2, 48), layers=(-1,))
    assert enc.name == "nothing" and enc.describe()["embed_dim"] == 12
    assert out.cls.shape == (2, 12) and out.patches.shape == (2, 4, 4, 12)
    assert out.layers[0].shape == (2, 4, 4, 12)
    assert not out.cls.any() and not out.patches.any() and not out.layers[0].any()
    assert enc.identity() != load_encoder("blank:32:8:16").identity()
    assert load_encoder("blank").grid_size() == 8  # 64 px, patch 8
    with pytest.raises(EncoderError, match="blank:SIDE:PATCH:DIM"):
        load_encoder("blank:32:8")
    with pytest.raises(EncoderError, match="not a multiple"):
        load_encoder("blank:30:8:4")


def test_preprocess_resizes_shorter_side_then_centre_crops():
    p = Preprocess(4, mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 2.0), channels=3)
    x = torch.zeros(1, 1, 8, 32)
    x[..., :, 8:24] = 1.0  # a bright centre band, 16 wide, in a 32-wide image
    out = p.apply(x)
    assert out.shape == (1, 3, 4, 4)
    # after resizing to 4 x 16 and cropping the centre 4 columns, everything is the band
    torch.testing.assert_close(out[0, 0], torch.ones(4, 4), atol=0.02, rtol=0)
    torch.testing.assert_close(out[0, 1], torch.ones(4, 4), atol=0.04, rtol=0)  # (1-.5)/.5
    torch.testing.assert_close(out[0, 2], torch.zeros(4, 4), atol=0.01, rtol=0)  # (1-1)/2
    with pytest.raises(EncoderError, match="grayscale"):
        p.apply(torch.zeros(1, 3, 4, 4))


def test_identity_follows_weights_and_preprocessing(backbone):
    enc = load_encoder(build_backbone(spec_from_config(CFG), seed=0))
    before = enc.identity()
    with torch.no_grad():
        enc.backbone.norm.weight.add_(1e-3)
    enc._identity = None
    assert enc.identity() != before
    other = load_encoder(build_backbone(spec_from_config(CFG), seed=0))
    assert other.identity() == before
    assert other.at_resolution(48).identity() != before


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(EncoderError, match="no such file"):
        load_encoder(tmp_path / "missing")
    bad = tmp_path / "bert"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(EncoderError, match="bert"):
        load_encoder(bad)
    with pytest.raises(EncoderError, match="needs cfg"):
        load_encoder("random")
    with pytest.raises(EncoderError, match="multiple of the patch size"):
        load_encoder("random", cfg=CFG, image_size=30)


def test_run_folder_loads_its_teacher(tmp_path):
    from raddino_lib.ssl.export import pretrained_encoder

    bb, run = pretrained_encoder(CFG)
    enc = load_encoder(run)
    x = _x()
    assert isinstance(enc, ViTEncoder)
    np.testing.assert_allclose(
        enc.encode(x).cls.detach().numpy(), bb.eval().forward_tokens(x)["cls"].detach().numpy(),
        atol=1e-6,
    )  # fmt: skip
