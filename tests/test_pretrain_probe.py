"""Learning checks, seed means, embeddings and snapshots of a pretraining run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from raddino_lib.eval.embed import embed_array, probe_features
from raddino_lib.eval.pretrain_probe import learning_checks, seed_means
from raddino_lib.models.backbone import BackboneSpec, ViTBackbone


def _rows(n: int, dino: float, h0: float, h1: float, hm: float, k: int = 64) -> list[dict]:
    return [
        {
            "step": i,
            "dino_loss": dino,
            "teacher_entropy": h0 + (h1 - h0) * i / (n - 1),
            "teacher_entropy_of_mean": hm,
            "prototypes_used": 30,
            "log_k": math.log(k),
        }
        for i in range(n)
    ]


def test_learning_checks_pass_and_fail_on_known_numbers():
    log_k = math.log(64)
    good = _rows(100, dino=0.5 * log_k, h0=4.0, h1=2.0, hm=0.95 * log_k)
    curve = pd.DataFrame({"mean_auprc": [0.3, 0.4]})
    c = learning_checks(good, curve, {"random init": [0.3, 0.31, 0.29]}, [0.4, 0.41, 0.39])
    assert c["dino_below_log_k"]["passed"] and c["teacher_entropy_falls"]["passed"]
    assert c["prototypes_in_use"]["passed"] and c["probe_beats_random_init"]["passed"]
    assert c["probe_beats_random_init"]["margin_mean"] == pytest.approx(0.1)
    # early-window mean: rows 10..19 of a linear ramp 4 -> 2
    assert c["teacher_entropy_falls"]["start"] == pytest.approx(4.0 - 2.0 * 14.5 / 99)
    bad = _rows(100, dino=0.95 * log_k, h0=4.0, h1=4.0, hm=0.2)
    c = learning_checks(bad, curve, {"pixels": [0.5, 0.3, 0.5]}, [0.4, 0.41, 0.39])
    assert not c["dino_below_log_k"]["passed"]
    assert not c["teacher_entropy_falls"]["passed"]
    assert not c["prototypes_in_use"]["passed"]
    assert not c["probe_beats_pixels"]["passed"]  # ahead on one seed only
    with pytest.raises(ValueError, match="seeds"):
        learning_checks(good, curve, {"x": [0.1]}, [0.2, 0.3])
    with pytest.raises(ValueError, match="no metrics"):
        learning_checks([], curve, {}, [])


def test_seed_means_average_findings_per_seed_ignoring_nan():
    res = pd.DataFrame(
        {"seed_0": [0.2, 0.4, np.nan], "seed_1": [0.6, 0.8, np.nan], "auprc_mean": [0, 0, 0]}
    )
    assert seed_means(res) == pytest.approx([0.3, 0.7])


def test_embed_array_matches_the_backbone_and_batches():
    spec = BackboneSpec(image_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                        layerscale_init=1.0)  # fmt: skip
    torch.manual_seed(0)
    bb = ViTBackbone(spec)
    imgs = np.random.default_rng(0).random((5, 16, 16)).astype(np.float32)
    emb = embed_array(bb, imgs, batch_size=2, precision="fp32")
    with torch.no_grad():
        out = bb.eval().forward_tokens(torch.from_numpy(imgs).unsqueeze(1))
    np.testing.assert_allclose(emb["cls"], out["cls"].numpy(), atol=1e-5)
    np.testing.assert_allclose(emb["mean_patch"], out["patches"].mean(1).numpy(), atol=1e-5)
    assert probe_features(emb).shape == (5, 32) and probe_features(emb, "cls").shape == (5, 16)
    with pytest.raises(ValueError, match="kind"):
        probe_features(emb, "max")
    with pytest.raises(ValueError, match="expected images"):
        embed_array(bb, imgs[0])


def test_grid_features_pool_patch_tokens_by_cell():
    spec = BackboneSpec(image_size=32, patch_size=8, embed_dim=8, depth=1, num_heads=2,
                        layerscale_init=1.0)  # fmt: skip
    torch.manual_seed(0)
    bb = ViTBackbone(spec)
    imgs = np.random.default_rng(1).random((3, 32, 32)).astype(np.float32)
    emb = embed_array(bb, imgs, precision="fp32", grid=2)
    with torch.no_grad():
        p = bb.eval().forward_tokens(torch.from_numpy(imgs).unsqueeze(1))["patches"]
    maps = p.reshape(3, 4, 4, 8)
    top_left = maps[:, :2, :2].mean(dim=(1, 2)).numpy()  # first cell, row-major
    bottom_right = maps[:, 2:, 2:].mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(emb["grid"][:, :8], top_left, atol=1e-5)
    np.testing.assert_allclose(emb["grid"][:, -8:], bottom_right, atol=1e-5)
    assert probe_features(emb, "cls+mean+grid").shape == (3, 8 * (2 + 4))
    with pytest.raises(ValueError, match="grid"):
        probe_features({"cls": emb["cls"], "mean_patch": emb["mean_patch"]}, "cls+mean+grid")


def test_encoder_probe_embeds_each_snapshot_once(tmp_path, monkeypatch):
    """Both feature kinds of one snapshot come from one (cached) embedding; changed weights
    are embedded anew."""
    import raddino_lib.eval.cache as cache_mod
    import raddino_lib.eval.pretrain_probe as pp
    from raddino_lib.data.phantom import generate_dataset
    from raddino_lib.data.records import load_records

    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "ph"
    generate_dataset(root, 8, size=32, seed=1, workers=1, progress=False)
    frontal = pp.frontal_records(load_records(root))
    spec = BackboneSpec(image_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
    torch.manual_seed(0)
    a = ViTBackbone(spec)
    calls, seen = [], {}

    def counting(enc, images, **kw):
        calls.append(kw["grid"])
        return embed_array(enc, images, **kw)

    def features_only(x, *args, **kw):
        seen[x.shape[1]] = np.asarray(x)
        return pd.DataFrame()

    monkeypatch.setattr(cache_mod, "embed_array", counting)
    monkeypatch.setattr(pp, "cached_finding_probe", features_only)
    for kind in ("cls+mean", "cls+mean+grid", "cls+mean"):
        pp.encoder_probe(a, root, frontal, ["cardiomegaly"], feature_kind=kind, grid=4)
    assert calls == [4]  # one embedding, with the pooled grid, for both kinds
    assert sorted(seen) == [2 * 16, (2 + 16) * 16]
    np.testing.assert_array_equal(seen[(2 + 16) * 16][:, : 2 * 16], seen[2 * 16])
    with torch.no_grad():
        a.blocks[0].mlp.fc1.weight.add_(1.0)  # the same module, trained further
    pp.encoder_probe(a, root, frontal, ["cardiomegaly"], feature_kind="cls+mean", grid=4)
    assert len(calls) == 2
