"""bf16 inference runs a bf16 copy of the encoder: the caller's encoder keeps its fp32
parameters, and the embeddings stay close to fp32 ones."""

from __future__ import annotations

import numpy as np
import torch

from raddino_lib.eval.embed import bf16_copy, embed_array
from raddino_lib.models.backbone import BackboneSpec, build_backbone
from raddino_lib.models.registry import load_encoder


def _encoder():
    vit = build_backbone(BackboneSpec(image_size=64, patch_size=8, embed_dim=64, depth=2,
                                      num_heads=4, layerscale_init=0.1), seed=0)  # fmt: skip
    return load_encoder(vit, name="mini")


def test_bf16_copy_leaves_the_original_alone():
    enc = _encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    run = bf16_copy(enc.train())
    assert all(p.dtype == torch.bfloat16 for p in run.parameters())
    assert run.backbone.pixel_mean.dtype == torch.float32  # buffers keep their dtype
    assert not run.training and enc.training
    after = enc.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_bf16_embeddings_are_close_to_fp32_and_the_encoder_stays_fp32():
    enc = _encoder()
    imgs = np.random.default_rng(0).random((5, 64, 64), dtype=np.float32)
    ref = embed_array(enc, imgs, batch_size=2, precision="fp32")
    got = embed_array(enc, imgs, batch_size=2, precision="bf16")
    assert all(p.dtype == torch.float32 for p in enc.parameters())
    for key in ("cls", "mean_patch"):
        a, b = ref[key], got[key]
        assert b.dtype == np.float32 and b.shape == a.shape
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() > 0.999
        assert not np.array_equal(a, b)  # bf16 did run
