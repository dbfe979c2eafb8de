"""open_clip vision towers as encoders (BiomedCLIP's layout), built locally from tiny configs."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from raddino_lib.models.registry import EncoderError, load_encoder

torch.set_num_threads(1)

NATIVE = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 50, "width": 16, "heads": 2, "layers": 1},
}
# BiomedCLIP's open_clip_config.json shape: a timm trunk, a linear projection, HF text tower
TIMM_TRUNK = {
    "embed_dim": 16,
    "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                   "timm_pool": "", "timm_proj": "linear", "image_size": 224},
    "text_cfg": {"hf_model_name": "not/downloaded", "hf_tokenizer_name": "not/downloaded",
                 "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler"},
}  # fmt: skip
PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "size": 32}


def _folder(tmp_path, model_cfg, preprocess=None):
    """An open_clip model folder with random weights: the vision tower's tensors under
    ``visual.`` plus text-tower and logit-scale tensors the loader must ignore."""
    from open_clip.model import _build_vision_tower
    from safetensors.torch import save_file

    torch.manual_seed(0)
    visual = _build_vision_tower(model_cfg["embed_dim"], model_cfg["vision_cfg"])
    state = {f"visual.{k}": v.contiguous() for k, v in visual.state_dict().items()}
    state["logit_scale"] = torch.tensor(4.6)
    state["text.token_embedding.weight"] = torch.zeros(50, 16)
    folder = tmp_path / "biomedclip-like"
    folder.mkdir()
    save_file(state, folder / "open_clip_model.safetensors")
    cfg = {"model_cfg": model_cfg, "preprocess_cfg": preprocess or {}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    return folder, visual.eval()


def test_open_clip_vision_transformer_tokens(tmp_path):
    pytest.importorskip("open_clip")
    folder, visual = _folder(tmp_path, NATIVE, PREPROCESS)
    enc = load_encoder(f"open_clip:{folder}", name="tiny-openclip")
    assert enc.kind == "open_clip" and enc.name == "tiny-openclip"
    assert enc.preprocess.image_size == 32 and enc.preprocess.mean == (0.5, 0.5, 0.5)
    assert (enc.patch_size, enc.num_layers, enc.embed_dim) == (8, 3, 32)
    x = torch.rand(2, 1, 40, 36)
    out = enc.encode(x, layers=(0, 2))
    assert out.cls.shape == (2, 32) and out.patches.shape == (2, 4, 4, 32)
    assert [t.shape for t in out.layers] == [(2, 4, 4, 32)] * 2
    # the same numbers as open_clip's own forward: CLS projected = its image embedding,
    # patches = its output tokens, and the last requested block = the final tokens
    pre = enc.preprocess.apply(x)
    visual.output_tokens = True
    with torch.no_grad():
        pooled, tokens = visual(pre)
    torch.testing.assert_close(out.cls @ visual.proj, pooled, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.patches.reshape(2, 16, 32), tokens, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.layers[1], out.patches)
    with pytest.raises(EncoderError, match="runs at its own side"):
        enc.at_resolution(48)


def test_open_clip_timm_trunk_runs_through_timm(tmp_path):
    pytest.importorskip("open_clip")
    folder, visual = _folder(tmp_path, TIMM_TRUNK, {"mean": [0.48145466, 0.4578275, 0.40821073]})
    enc = load_encoder(f"open_clip:{folder}")
    assert enc.kind == "timm" and enc.name == "biomedclip-like"
    assert enc.preprocess.image_size == 224 and enc.preprocess.mean[0] == pytest.approx(0.48145466)
    out = enc.encode(torch.rand(1, 1, 224, 224), layers=(11,))
    assert out.cls.shape == (1, 192) and out.patches.shape == (1, 14, 14, 192)
    # the trunk's weights are the checkpoint's
    got = dict(enc.model.named_parameters())["blocks.0.attn.qkv.weight"]
    torch.testing.assert_close(got, visual.trunk.blocks[0].attn.qkv.weight)


def test_open_clip_bad_folders(tmp_path):
    pytest.importorskip("open_clip")
    folder, _ = _folder(tmp_path, NATIVE)
    (folder / "open_clip_model.safetensors").unlink()
    with pytest.raises(EncoderError, match="no open_clip_model.safetensors"):
        load_encoder(f"open_clip:{folder}")
    (folder / "open_clip_config.json").unlink()
    with pytest.raises(EncoderError, match="no open_clip_config.json"):
        load_encoder(f"open_clip:{folder}")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    from safetensors.torch import save_file

    save_file(
        {"visual.conv1.weight": torch.zeros(3, 3, 8, 8)}, wrong / "open_clip_model.safetensors"
    )
    (wrong / "open_clip_config.json").write_text(json.dumps({"model_cfg": NATIVE}))
    with pytest.raises(EncoderError, match="do not fit the vision tower"):
        load_encoder(f"open_clip:{wrong}")
    with pytest.raises(EncoderError, match="no model config 'no-such-model'"):
        load_encoder("open_clip:no-such-model=x.bin")


def test_open_clip_missing_package_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip -> ImportError
    with pytest.raises(EncoderError, match="pip install open_clip_torch"):
        load_encoder(f"open_clip:{tmp_path}")
