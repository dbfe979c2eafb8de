"""The benchmark's FLOP count (benchmarks/bench.py) counts the attention too: torch's
FlopCounterMode has no formula for the CPU flash-attention op, so a count on the fused path
would leave it out and overstate nothing but understate MFU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench import _op_group, mfu_of_rounds, vit_forward_flops  # noqa: E402
from raddino_lib.config import make_config  # noqa: E402
from raddino_lib.models.backbone import ViTBackbone, spec_from_config  # noqa: E402


def test_forward_flops_match_the_vit_formula_on_every_attention_path(monkeypatch) -> None:
    from raddino_lib.models import attention

    spec = spec_from_config(make_config("smoke"))  # 32 px, patch 8, width 32, depth 2
    model = ViTBackbone(spec).eval()
    n = (spec.image_size // spec.patch_size) ** 2 + 1  # patches + CLS
    d, depth, b = spec.embed_dim, spec.depth, 3
    x = torch.randn(b, 3, spec.image_size, spec.image_size)
    calls = []
    real = attention.blocked_attention
    monkeypatch.setattr(attention, "blocked_attention", lambda *a: calls.append(1) or real(*a))
    for fused, budget in ((True, None), (False, None), (False, 1)):  # 1 byte: blocked path
        model.set_fused_attention(fused)
        monkeypatch.setattr(attention, "SCORE_BLOCK_BYTES", budget or attention.SCORE_BLOCK_BYTES)
        f = vit_forward_flops(model, x)
        # q k^T and attn v: 2 matmuls of N x N x d per image and block, 2 FLOPs a MAC
        assert f["attention"] == b * depth * 4 * n * n * d
        # qkv (3 d^2), proj (d^2), MLP (8 d^2) per token and block
        assert f["linear"] == b * depth * 2 * n * 12 * d * d
        assert f["total"] == f["linear"] + f["attention"] + f["conv"] + f["other"]
        assert model.blocks[0].attn.fused_attn is fused  # the flag is restored
    assert len(calls) == depth  # the blocked kernel ran (in the last pass only)


def test_op_groups() -> None:
    assert _op_group("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert _op_group("aten.bmm") == "attention" and _op_group("aten::_softmax") == "attention"
    assert _op_group("aten::addmm") == "linear" and _op_group("aten.addmm") == "linear"
    assert _op_group("mkldnn::_linear_pointwise") == "linear"
    assert _op_group("aten.mm") == "attention" and _op_group("aten::mm") == "attention"
    assert _op_group("aten::mkldnn_convolution") == "conv"
    assert _op_group("aten::gelu") == "other"


def test_mfu_of_interleaved_rounds_is_the_median_round_ratio() -> None:
    # 1e12 FLOPs; rounds (peak FLOP/s, seconds): ratios 0.5, 0.8, 0.625
    rounds = [(1e12, 2.0), (1.25e12, 1.0), (0.8e12, 2.0)]
    out = mfu_of_rounds(1e12, rounds)
    assert out["ratios"] == [0.5, 0.8, 0.625]
    assert (out["mfu"], out["median_round"]) == (0.625, 2)
    # fastest forward (1 s) over highest peak (1.25e12)
    assert out["best_of_bests"] == 0.8
    # even count: the lower middle ratio, one that a round measured
    four = mfu_of_rounds(1e12, [*rounds, (1e12, 1.0)])  # adds a ratio of 1.0
    assert (four["mfu"], four["median_round"]) == (0.625, 2)
    for bad in ([], [(0.0, 1.0)], [(1e12, -1.0)]):
        with pytest.raises(ValueError, match="rounds must be"):
            mfu_of_rounds(1e12, bad)
