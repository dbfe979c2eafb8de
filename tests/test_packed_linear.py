"""raddino_lib.models.packed: oneDNN linear layers with fused bias and GELU, for inference."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import raddino_lib.models.packed as P
from raddino_lib.models.packed import PackedLinear, pack_linears, packed_linear_supported

needs_onednn = pytest.mark.skipif(not packed_linear_supported(), reason="no oneDNN linear op")


def _linear(k: int = 48, n: int = 40, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(k, n)
    lin.bias.data.uniform_(-1.0, 1.0)
    return lin


def _bf16(lin: nn.Linear) -> nn.Linear:
    lin = copy.deepcopy(lin)
    lin.to(torch.bfloat16)
    return lin


@needs_onednn
@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_fast_path_matches_fp32_as_closely_as_f_linear(activation):
    lin = _linear()
    x = torch.randn(3, 7, 48)
    want = F.linear(x, lin.weight, lin.bias)
    want = F.gelu(want) if activation == "gelu" else want
    low = _bf16(lin)
    packed = PackedLinear(low, activation)
    with torch.no_grad():
        got = packed(x.to(torch.bfloat16))
        ref = F.linear(x.to(torch.bfloat16), low.weight, low.bias)
        ref = F.gelu(ref) if activation == "gelu" else ref
    assert packed._packed is not None  # the oneDNN path ran
    assert got.dtype == torch.bfloat16 and got.shape == (3, 7, 40)
    err, ref_err = (got.float() - want).abs().max(), (ref.float() - want).abs().max()
    assert err <= 1.5 * ref_err + 1e-3  # no worse than bf16 F.linear (+ F.gelu)
    assert err < 0.05


@needs_onednn
def test_autocast_input_is_cast_and_weight_changes_repack():
    low = _bf16(_linear())
    packed = PackedLinear(low)
    x = torch.randn(5, 48)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        first = packed(x)  # fp32 input under autocast: cast to bf16 as autocast does
        key = packed._packed[0]
        low.weight.mul_(2.0)
        low.bias.zero_()
        second = packed(x)
    assert first.dtype == second.dtype == torch.bfloat16
    assert packed._packed[0] != key  # the in-place change was seen
    want = F.linear(x.to(torch.bfloat16), low.weight).float()
    assert torch.allclose(second.float(), want, atol=0.05, rtol=0.02)


@needs_onednn
def test_weights_made_under_inference_mode_pack():
    with torch.inference_mode():
        lin = nn.Linear(48, 40, dtype=torch.bfloat16)  # inference tensors: no version counter
        x = torch.randn(6, 48, dtype=torch.bfloat16)
        got = PackedLinear(lin)(x)
        want = F.linear(x, lin.weight, lin.bias)
    assert torch.allclose(got.float(), want.float(), atol=0.05, rtol=0.02)


def test_fallback_with_gradients_is_f_linear_exactly():
    lin = _linear()
    packed = PackedLinear(lin, "gelu")
    x = torch.randn(4, 48, requires_grad=True)
    out = packed(x)
    assert torch.equal(out, F.gelu(F.linear(x, lin.weight, lin.bias)))
    out.sum().backward()
    assert lin.weight.grad is not None and x.grad is not None
    assert packed._packed is None  # fp32 weights with autograd: the oneDNN path never ran


def test_bad_activation_is_refused():
    with pytest.raises(ValueError, match="activation"):
        PackedLinear(_linear(), "relu")


class _Mlp(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(16, 32), act, nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def test_pack_linears_folds_exact_gelu_only_and_keeps_the_state_dict():
    torch.manual_seed(0)
    model = nn.Sequential(_Mlp(nn.GELU()), _Mlp(nn.GELU(approximate="tanh")), nn.Linear(16, 3))
    want = model(torch.ones(2, 16))
    names = set(model.state_dict())
    pack_linears(model)
    assert set(model.state_dict()) == names
    assert isinstance(model[0].fc1, PackedLinear) and model[0].fc1.activation == "gelu"
    assert isinstance(model[0].act, nn.Identity)
    assert model[1].fc1.activation == "none" and isinstance(model[1].act, nn.GELU)  # tanh kept
    assert isinstance(model[2], PackedLinear)
    assert torch.equal(model(torch.ones(2, 16)), want)  # fp32 with autograd: F.linear, same
    copy.deepcopy(model)  # no opaque packed weight in copies


@needs_onednn
def test_bf16_copy_of_a_vit_packs_its_linears_and_embeds_as_before(monkeypatch):
    from raddino_lib.config import make_config
    from raddino_lib.eval import embed as E
    from raddino_lib.models.backbone import ViTBackbone, spec_from_config

    torch.manual_seed(0)
    enc = ViTBackbone(spec_from_config(make_config("smoke"))).eval()
    run = E.bf16_copy(enc)
    assert sum(isinstance(m, PackedLinear) for m in run.modules()) == 4 * len(enc.blocks)
    assert not any(isinstance(m, PackedLinear) for m in enc.modules())  # caller's untouched
    assert set(run.state_dict()) == set(enc.state_dict())
    x = torch.rand(3, 1, enc.spec.image_size, enc.spec.image_size)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = run(x).float()
        assert all(m._packed is not None for m in run.modules() if isinstance(m, PackedLinear))
        monkeypatch.setattr(P, "packed_linear_supported", lambda: False)
        slow = run(x).float()  # the same bf16 copy through F.linear and F.gelu
    with torch.no_grad():
        ref = enc(x).float()
    cos = F.cosine_similarity
    assert cos(fast, ref).min() > 0.999
    assert cos(fast, ref).min() >= cos(slow, ref).min() - 1e-3


@needs_onednn
def test_bf16_copy_of_a_transformers_dinov2_packs_q_k_v_and_folds_its_gelu(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    from raddino_lib.eval.embed import bf16_copy, embed_array
    from raddino_lib.models.registry import load_encoder

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, image_size=32, patch_size=8)  # fmt: skip
    Dinov2Model(cfg).save_pretrained(tmp_path / "dino")
    enc = load_encoder(str(tmp_path / "dino"))
    run = bf16_copy(enc)
    layer = run.model.encoder.layer[0]
    assert all(isinstance(getattr(layer.attention, n), PackedLinear)
               for n in ("q_proj", "k_proj", "v_proj", "o_proj"))  # fmt: skip
    assert layer.mlp.fc1.activation == "gelu" and isinstance(layer.mlp.activation_fn, nn.Identity)
    assert isinstance(layer.mlp.fc2, PackedLinear) and layer.mlp.fc2.activation == "none"
    images = torch.rand(4, 32, 32).numpy()
    fast = embed_array(enc, images, precision="bf16")["cls"]
    ref = embed_array(enc, images, precision="fp32")["cls"]
    cos = F.cosine_similarity(torch.from_numpy(fast), torch.from_numpy(ref))
    assert cos.min() > 0.999
    assert not any(isinstance(m, PackedLinear) for m in enc.modules())  # caller's untouched
