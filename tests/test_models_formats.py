"""Checkpoint formats: transformers export/import, DINOv2 and timm keys, resampling, errors.

Tiny models (image 28, patch 14, dim 48, depth 2, 2 heads) with random weights and LayerScale
gammas around 0.5, so that every block changes the output and a wrong key map shows.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from raddino_lib.models import (
    BackboneSpec,
    CheckpointFormatError,
    ViTBackbone,
    build_backbone,
    export_hf,
    hf_to_native,
    infer_spec,
    load_backbone,
    load_head_state,
    native_to_hf,
    resample_pos_embed,
)

SPEC = BackboneSpec(
    image_size=28,
    patch_size=14,
    embed_dim=48,
    depth=2,
    num_heads=2,
    layerscale_init=1e-5,
    pixel_mean=0.53,
    pixel_std=0.26,
)
TOL = 1e-4


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random nonzero LayerScale gammas (~0.5) and biases, so blocks and biases matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".gamma"):
                p.copy_(0.3 + 0.4 * torch.rand(p.shape, generator=g))
            elif name.endswith("bias") or name in ("cls_token", "pos_embed", "mask_token"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def _backbone(spec: BackboneSpec = SPEC, seed: int = 0) -> ViTBackbone:
    return _randomise(build_backbone(spec, seed=seed), seed)  # type: ignore[return-value]


def _head_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "mlp.0.weight": torch.randn(16, 48, generator=g),
        "mlp.0.bias": torch.randn(16, generator=g),
        "last_layer.weight_g": torch.ones(8, 1),
        "last_layer.weight_v": torch.randn(8, 16, generator=g),
    }


def _images(n: int = 2, side: int = 28, seed: int = 0) -> torch.Tensor:
    """Grayscale images in [0, 1], ``[n, 1, side, side]``."""
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _tokens(model: ViTBackbone, x: torch.Tensor) -> torch.Tensor:
    """``[B, 1 + N, D]``: CLS then patch tokens of our backbone."""
    out = model.eval().forward_tokens(x)
    return torch.cat([out["cls"][:, None], out["patches"]], dim=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[ViTBackbone, Path]:
    bb = _backbone()
    out = export_hf(bb, tmp_path_factory.mktemp("export") / "rad-dino-tiny", head=_head_state())
    return bb, out


# -- export -> transformers -------------------------------------------------------------
def test_export_layout_and_config(exported: tuple[ViTBackbone, Path]) -> None:
    _, out = exported
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "backbone_compatible.safetensors",
        "config.json",
        "dino_head.safetensors",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "dinov2"
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]) == (48, 2, 2)
    assert (cfg["image_size"], cfg["patch_size"], cfg["num_channels"]) == (28, 14, 3)
    assert cfg["layerscale_value"] == SPEC.layerscale_init
    assert cfg["qkv_bias"] is True and cfg["use_swiglu_ffn"] is False
    assert cfg["layer_norm_eps"] == 1e-6 and cfg["hidden_act"] == "gelu"
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["image_processor_type"] == "BitImageProcessor"
    assert pre["size"] == {"shortest_edge": 28} and pre["crop_size"] == {"height": 28, "width": 28}
    assert pre["image_mean"] == [0.53] * 3 and pre["image_std"] == [0.26] * 3
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporaries


def test_transformers_automodel_matches_backbone(exported: tuple[ViTBackbone, Path]) -> None:
    from transformers import AutoModel

    bb, out = exported
    hf, info = AutoModel.from_pretrained(out, output_loading_info=True, dtype=torch.float32)
    assert type(hf).__name__ == "Dinov2Model"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    hf.eval()
    x = _images(3)
    with torch.no_grad():
        h = hf(pixel_values=bb.preprocess(x)).last_hidden_state
    ref = _tokens(bb, x)
    assert h.shape == ref.shape == (3, 5, 48)
    assert (h[:, 0] - ref[:, 0]).abs().max() < TOL  # CLS
    assert (h[:, 1:] - ref[:, 1:]).abs().max() < TOL  # patch tokens
    assert ref[:, 0].std() > 0.1  # not a degenerate comparison


def test_image_processor_matches_preprocess(exported: tuple[ViTBackbone, Path]) -> None:
    from transformers import AutoImageProcessor, AutoModel

    bb, out = exported
    proc = AutoImageProcessor.from_pretrained(out)
    assert list(proc.image_mean) == pytest.approx([SPEC.pixel_mean] * 3)
    assert list(proc.image_std) == pytest.approx([SPEC.pixel_std] * 3)
    assert (proc.crop_size["height"], proc.crop_size["width"]) == (28, 28)
    img = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    pv = proc(images=Image.fromarray(img, mode="L"), return_tensors="pt")["pixel_values"]
    x = torch.from_numpy(img).float().div(255)[None, None]
    # an image of exactly image_size: resize and crop are identities, so this is exact
    assert pv.shape == (1, 3, 28, 28)
    assert (pv - bb.preprocess(x)).abs().max() < 1e-5
    hf = AutoModel.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        h = hf(pixel_values=pv).last_hidden_state
    assert (h - _tokens(bb, x)).abs().max() < TOL


# -- round trips ------------------------------------------------------------------------
def test_native_hf_round_trip_is_exact() -> None:
    sd = _backbone().state_dict()
    hf = native_to_hf(sd)
    assert "encoder.layer.1.attention.attention.value.bias" in hf
    assert hf["embeddings.mask_token"].shape == (1, 48)
    back = hf_to_native(hf)
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    # transformers-5 in-memory names and a dinov2. prefix are accepted as well
    renamed = {
        "dinov2."
        + k.replace("attention.attention.query", "attention.q_proj")
        .replace("attention.attention.key", "attention.k_proj")
        .replace("attention.attention.value", "attention.v_proj")
        .replace("attention.output.dense", "attention.o_proj"): v
        for k, v in hf.items()
    }
    back2 = hf_to_native(renamed)
    assert set(back2) == set(sd) and all(torch.equal(back2[k], sd[k]) for k in sd)


def test_load_exported_folder(exported: tuple[ViTBackbone, Path], tmp_path: Path) -> None:
    bb, out = exported
    loaded = load_backbone(out)
    assert loaded.source_format == "hf"
    assert loaded.spec == SPEC
    assert loaded.missing == [] and loaded.unexpected == []
    x = _images(2, seed=1)
    assert torch.equal(_tokens(loaded.backbone, x), _tokens(bb, x))
    assert loaded.head_state is not None
    assert set(loaded.head_state) == set(_head_state())
    assert all(torch.equal(loaded.head_state[k], v) for k, v in _head_state().items())
    assert set(load_head_state(out / "dino_head.safetensors")) == set(_head_state())
    # the native file alone (no config beside it) keeps the spec in its metadata
    lone = tmp_path / "weights.safetensors"
    lone.write_bytes((out / "backbone_compatible.safetensors").read_bytes())
    alone = load_backbone(lone)
    assert alone.source_format == "dinov2" and alone.spec == SPEC
    assert torch.equal(_tokens(alone.backbone, x), _tokens(bb, x))


def test_load_transformers_save_pretrained(tmp_path: Path) -> None:
    """A folder written by transformers itself (not by our exporter) loads and matches."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14
    )
    hf = _randomise(Dinov2Model(cfg), 3)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("lambda1"):
                p.copy_(0.3 + 0.4 * torch.rand(p.shape))
    hf.save_pretrained(tmp_path / "hf")
    with pytest.warns(UserWarning, match="pixel mean/std"):  # no preprocessor_config.json
        loaded = load_backbone(tmp_path / "hf")
    assert loaded.source_format == "hf" and loaded.spec.num_heads == 2
    assert loaded.spec.layerscale_init == cfg.layerscale_value
    assert not loaded.missing
    bb = loaded.backbone
    x = _images(2, seed=2)
    with torch.no_grad():
        h = hf.eval()(pixel_values=bb.preprocess(x)).last_hidden_state
    assert (h - _tokens(bb, x)).abs().max() < TOL
    # and the in-memory (transformers-5) key names convert to the same tensors
    mem = hf_to_native(hf.state_dict())
    assert all(torch.equal(mem[k], v) for k, v in bb.state_dict().items())


# -- DINOv2 and timm keys -----------------------------------------------------------------
def _chunked(sd: dict[str, torch.Tensor], chunk: int, prefix: str) -> dict[str, torch.Tensor]:
    """DINOv2 FSDP layout: block i lives at ``blocks.<i // chunk>.<i>.``."""
    out = {}
    for k, v in sd.items():
        if k.startswith("blocks."):
            i, rest = k.split(".", 2)[1:]
            k = f"blocks.{int(i) // chunk}.{i}.{rest}"
        out[prefix + k] = v
    return out


def test_dinov2_training_checkpoint_teacher_chunks(tmp_path: Path) -> None:
    spec = dataclasses.replace(SPEC, depth=4)
    teacher, student = _backbone(spec, seed=1), _backbone(spec, seed=2)
    state = {
        **_chunked(teacher.state_dict(), 2, "teacher.backbone."),
        **_chunked(student.state_dict(), 2, "student.backbone."),
        **{f"teacher.dino_head.{k}": v for k, v in _head_state(1).items()},
        **{f"student.dino_head.{k}": v for k, v in _head_state(2).items()},
        "dino_loss.center": torch.zeros(1, 8),
    }
    assert "teacher.backbone.blocks.1.3.attn.qkv.weight" in state
    path = tmp_path / "model_final.pth"
    torch.save({"model": state}, path)
    with pytest.warns(UserWarning, match="pixel mean/std not recorded"):
        loaded = load_backbone(path, num_heads=2)
    assert loaded.source_format == "dinov2"
    assert loaded.missing == [] and loaded.unexpected == []
    assert loaded.spec.depth == 4 and loaded.spec.embed_dim == 48
    assert loaded.spec.pixel_mean == BackboneSpec().pixel_mean  # defaults, with the warning
    x = teacher.preprocess(_images(2, seed=3))  # same normalised input for both
    with torch.no_grad():
        got = loaded.backbone.forward_tokens(x, normalized=True)
        want = teacher.forward_tokens(x, normalized=True)
    assert torch.equal(got["cls"], want["cls"]) and torch.equal(got["patches"], want["patches"])
    assert loaded.head_state is not None
    assert torch.equal(loaded.head_state["mlp.0.weight"], _head_state(1)["mlp.0.weight"])
    assert any("ignored" in n for n in loaded.notes)  # the student and the loss centre


def _timm_dinov2(name: str = "vit_small_patch14_dinov2") -> torch.nn.Module:
    m = timm.create_model(
        name, pretrained=False, img_size=28, embed_dim=48, depth=2, num_heads=2, num_classes=0
    )
    return _randomise(m, 4)


def test_timm_dinov2_keys(tmp_path: Path) -> None:
    tm = _timm_dinov2()
    ours = build_backbone(SPEC).state_dict()
    # timm's vit_*_dinov2 uses exactly our keys and shapes, without the mask token
    assert set(tm.state_dict()) == set(ours) - {"mask_token"}
    assert all(tm.state_dict()[k].shape == ours[k].shape for k in tm.state_dict())
    path = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in tm.state_dict().items()}, str(path))
    loaded = load_backbone(path, spec=SPEC)
    assert loaded.source_format == "timm"
    assert loaded.missing == ["mask_token"] and loaded.unexpected == []
    assert torch.count_nonzero(loaded.backbone.mask_token) == 0
    x = _images(2, seed=5)
    bb = loaded.backbone
    with torch.no_grad():
        ref = tm.forward_features(bb.preprocess(x))
    assert (ref - _tokens(bb, x)).abs().max() < TOL


def test_infer_spec_from_shapes() -> None:
    sd = _chunked(_backbone().state_dict(), 1, "module.backbone.")
    with pytest.warns(UserWarning, match="pixel mean/std"):
        spec = infer_spec(sd, num_heads=2)
    assert dataclasses.replace(spec, pixel_mean=0.53, pixel_std=0.26) == SPEC
    pre = {"image_mean": [0.53] * 3, "image_std": [0.26] * 3}
    assert infer_spec(sd, num_heads=2, preprocessor_config=pre) == SPEC
    wide_sd = build_backbone(dataclasses.replace(SPEC, embed_dim=128)).state_dict()
    with pytest.warns(UserWarning, match="embed_dim // 64"):
        wide = infer_spec(wide_sd, preprocessor_config=pre)
    assert wide.num_heads == 2 and wide.embed_dim == 128


# -- position embeddings ------------------------------------------------------------------
def test_pos_embed_resampled_to_larger_spec(exported: tuple[ViTBackbone, Path]) -> None:
    bb, out = exported
    big = dataclasses.replace(SPEC, image_size=42)
    loaded = load_backbone(out, spec=big)
    pe = loaded.backbone.pos_embed
    assert pe.shape == (1, 1 + 3 * 3, 48)
    assert torch.equal(pe[:, 0], bb.pos_embed[:, 0])  # class position unchanged
    assert torch.allclose(pe, resample_pos_embed(bb.pos_embed.detach(), (3, 3)))
    assert any("resampled pos_embed 2x2 -> 3x3" in n for n in loaded.notes)
    # same as the source backbone run at 42 px (timm resamples on the fly the same way)
    x = _images(2, side=42, seed=6)
    assert (_tokens(loaded.backbone, x) - _tokens(bb, x)).abs().max() < 1e-5


# -- errors --------------------------------------------------------------------------------
class _NotATensor:
    """A custom class: torch.load(weights_only=True) refuses to unpickle it."""


def _save(path: Path, sd: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def test_error_unknown_format(tmp_path: Path) -> None:
    path = _save(tmp_path / "odd.safetensors", {"foo.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointFormatError, match="unknown checkpoint format") as e:
        load_backbone(path, spec=SPEC)
    assert str(path) in str(e.value)
    (tmp_path / "odd.npz").write_bytes(b"")
    with pytest.raises(CheckpointFormatError, match="unknown file type"):
        load_backbone(tmp_path / "odd.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointFormatError, match="holds no backbone weights"):
        load_backbone(tmp_path / "empty")


def test_error_missing_and_unexpected_keys(tmp_path: Path) -> None:
    sd = _backbone().state_dict()
    del sd["blocks.1.norm2.weight"]
    path = _save(tmp_path / "missing.safetensors", sd)
    with pytest.raises(CheckpointFormatError, match=r"missing: \[blocks\.1\.norm2\.weight\]") as e:
        load_backbone(path, spec=SPEC)
    assert str(path) in str(e.value)
    sd = {**_backbone().state_dict(), "blocks.0.extra.weight": torch.zeros(3)}
    path = _save(tmp_path / "extra.safetensors", sd)
    with pytest.raises(CheckpointFormatError, match=r"unexpected: \[blocks\.0\.extra\.weight\]"):
        load_backbone(path, spec=SPEC)


def test_error_shape_mismatch(tmp_path: Path) -> None:
    sd = _backbone().state_dict()
    path = _save(tmp_path / "ok.safetensors", sd)
    with pytest.raises(CheckpointFormatError, match="embed_dim: weights 48 vs spec 64") as e:
        load_backbone(path, spec=dataclasses.replace(SPEC, embed_dim=64))
    assert str(path) in str(e.value)
    with pytest.raises(CheckpointFormatError, match="depth: weights 2 vs spec 3"):
        load_backbone(path, spec=dataclasses.replace(SPEC, depth=3))
    sd["blocks.1.mlp.fc1.bias"] = torch.zeros(100)
    path = _save(tmp_path / "bad_shape.safetensors", sd)
    with pytest.raises(CheckpointFormatError, match=r"blocks\.1\.mlp\.fc1\.bias: file \(100,\)"):
        load_backbone(path, spec=SPEC)


def test_error_register_tokens_and_swiglu(tmp_path: Path) -> None:
    reg = _timm_dinov2("vit_small_patch14_reg4_dinov2").state_dict()
    assert "reg_token" in reg
    path = _save(tmp_path / "reg.safetensors", reg)
    with pytest.raises(CheckpointFormatError, match="register tokens") as e:
        load_backbone(path, spec=SPEC)
    assert str(path) in str(e.value)
    sd = {k.replace("mlp.fc1", "mlp.w12"): v for k, v in _backbone().state_dict().items()}
    with pytest.raises(CheckpointFormatError, match="SwiGLU"):
        load_backbone(_save(tmp_path / "swiglu.safetensors", sd), spec=SPEC)


def test_error_pickle_refused(tmp_path: Path) -> None:
    path = tmp_path / "unsafe.pth"
    torch.save({"model": _backbone().state_dict(), "extra": _NotATensor()}, path)
    with pytest.raises(CheckpointFormatError, match="weights_only=True") as e:
        load_backbone(path, spec=SPEC)
    assert str(path) in str(e.value)


def test_error_num_heads_unknown(tmp_path: Path) -> None:
    path = _save(tmp_path / "bare.safetensors", _backbone().state_dict())
    with pytest.raises(CheckpointFormatError, match="pass num_heads") as e:
        load_backbone(path)
    assert str(path) in str(e.value)
    with pytest.warns(UserWarning, match="pixel mean/std"):
        assert load_backbone(path, num_heads=2).spec.num_heads == 2


def test_export_refuses_non_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    bb = _backbone()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_hf(bb, out)
    assert (out / "keep.txt").exists()
    export_hf(bb, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
