"""The cache-blocked attention kernel: timm's plain outputs bit for bit, and when it runs."""

from __future__ import annotations

import pytest
import torch

from raddino_lib.models import attention as A
from raddino_lib.models.backbone import BackboneSpec, build_backbone


def _qkv(B, N, H, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, 3 * H * D, generator=g).to(dtype)


def _plain(qkv, H, scale):
    """timm's plain kernel, written out: [B, N, 3C] -> [B, N, C]."""
    B, N, C3 = qkv.shape
    q, k, v = qkv.reshape(B, N, 3, H, C3 // 3 // H).permute(2, 0, 3, 1, 4).unbind(0)
    x = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
    return x.transpose(1, 2).reshape(B, N, C3 // 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads", [1, 2, 3, 4, 8, 13])
def test_blocked_equals_plain_bit_for_bit(dtype, heads):
    B, N, H, D = 5, 37, 4, 16  # 3 heads, or 3 images (13 heads), a block: a short last one
    qkv = _qkv(B, N, H, D, dtype)
    out = A.blocked_attention(qkv, H, D**-0.5, heads)  # 3 heads: a short last block
    assert out.dtype == dtype and out.shape == (B, N, H * D)
    assert torch.equal(out, _plain(qkv, H, D**-0.5))


def test_blocked_matches_a_hand_computed_case():
    # one token attends to two keys; one head of width 1, so softmax([0, ln 3]) = [1/4, 3/4]
    q, k, v = [0.0, 1.0], [0.0, 1.0], [4.0, 8.0]  # rows: token 0, token 1
    qkv = torch.tensor([[[q[i], k[i], v[i]] for i in range(2)]])  # [1, 2, 3]
    scale = float(torch.log(torch.tensor(3.0)))
    out = A.blocked_attention(qkv, 1, scale, 1)
    # token 0: q = 0, uniform weights -> 6; token 1: scores [0, ln 3] -> 4/4 + 8 * 3/4 = 7
    torch.testing.assert_close(out, torch.tensor([[[6.0], [7.0]]]))


def test_heads_per_block_and_bad_input():
    assert A.heads_per_block(1370, 2) == 1  # ViT-B/14 at 518 px in bf16: one head at a time
    assert A.heads_per_block(577, 2) == 6
    assert A.heads_per_block(5000, 4) == 1  # never zero
    with pytest.raises(ValueError, match="3 \\* C"):
        A.blocked_attention(torch.zeros(1, 4, 10), 3, 1.0, 1)


def _vit(**kw):
    spec = BackboneSpec(image_size=64, patch_size=8, embed_dim=64, depth=2, num_heads=4, **kw)
    return build_backbone(spec, seed=0).eval()


def test_backbone_takes_the_blocked_path_only_where_it_should(monkeypatch):
    vit = _vit()
    vit.set_fused_attention(False)
    calls = []
    real = A.blocked_attention
    monkeypatch.setattr(A, "blocked_attention", lambda *a: calls.append(a[3]) or real(*a))
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        small = vit.forward_tokens(vit.preprocess(x))  # 65 tokens: the scores fit, timm's path
    assert calls == []
    monkeypatch.setattr(A, "SCORE_BLOCK_BYTES", 65 * 65 * 4 * 2)  # two heads a block
    with torch.no_grad():
        blocked = vit.forward_tokens(vit.preprocess(x))
    assert calls == [2, 2]  # both blocks took it, two heads at a time
    assert torch.equal(blocked["cls"], small["cls"])
    assert torch.equal(blocked["patches"], small["patches"])
    calls.clear()
    vit.forward_tokens(vit.preprocess(x))  # autograd on: timm's path
    with torch.no_grad():
        vit.set_fused_attention(True)
        vit.forward_tokens(vit.preprocess(x))  # fused asked for: fused
        vit.set_fused_attention(False)
        seen = []
        h = vit.blocks[-1].attn.attn_drop.register_forward_hook(lambda m, i, o: seen.append(o))
        vit.forward_tokens(vit.preprocess(x))  # a hook reads the probabilities: timm's path
        h.remove()
    assert calls == [2] and len(seen) == 1  # only the first block of the hooked forward


def test_blocked_under_bf16_autocast_matches_plain(monkeypatch):
    vit = _vit()
    vit.set_fused_attention(False)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = vit.forward_tokens(vit.preprocess(x))["cls"]
        monkeypatch.setattr(A, "SCORE_BLOCK_BYTES", 65 * 65 * 2)  # one bf16 head a block
        assert A.heads_per_block(65, 2) == 1
        out = vit.forward_tokens(vit.preprocess(x))["cls"]
    assert torch.equal(out, ref)


def _hf_dinov2(tmp_path, layers=2):
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                       intermediate_size=128, image_size=64, patch_size=8)  # fmt: skip
    torch.manual_seed(0)
    Dinov2Model(cfg).save_pretrained(tmp_path / "dino")
    return tmp_path / "dino"


def test_transformers_models_load_with_the_blocked_kernel(tmp_path, monkeypatch):
    from transformers import Dinov2Model

    from raddino_lib.models.registry import load_encoder

    folder = _hf_dinov2(tmp_path)
    enc = load_encoder(str(folder))
    assert enc.model.config._attn_implementation == A.HF_BLOCKED
    x = torch.rand(3, 3, 64, 64)
    calls = []
    real = A.blocked_heads
    monkeypatch.setattr(A, "blocked_heads", lambda *a: calls.append(a[-1]) or real(*a))
    monkeypatch.setattr(A, "SCORE_BLOCK_BYTES", 65 * 65 * 4 * 2)  # two heads a block
    ref = Dinov2Model.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        got = enc.model(pixel_values=x).last_hidden_state
        want = ref(pixel_values=x).last_hidden_state
    assert calls == [2, 2]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # eager scales after q k^T
    got_grad = enc.model(pixel_values=x).last_hidden_state  # autograd on: SDPA
    assert calls == [2, 2]
    torch.testing.assert_close(got_grad.detach(), want, rtol=1e-5, atol=1e-5)
