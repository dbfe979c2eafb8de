"""The paper's augmented linear probe on a frozen encoder (raddino_lib.eval.augmented_probe):
it learns a finding the pixels show and not one they do not, masks missing labels, is
deterministic by seed, and returns finding_probe's table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from raddino_lib.config import make_config
from raddino_lib.eval.augmented_probe import (
    DEFAULT_AUGMENT,
    ProbeAugment,
    augment_images,
    augmented_probe,
    augmented_probe_arrays,
    class_losses,
    masked_bce,
)
from raddino_lib.eval.cache import cached_embeddings
from raddino_lib.eval.embed import probe_features
from raddino_lib.eval.probe import finding_probe
from raddino_lib.models.registry import load_encoder

FAST = dict(epochs=6, lr=1e-2, batch_size=32, progress=False)
IDENTITY = ProbeAugment(
    crop_scale=(1, 1), crop_ratio=(1, 1), rotate=0, translate=0, scale=(1, 1),
    brightness=0, contrast=0, noise_std=0,
)  # fmt: skip


def _toy(n: int = 240, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, np.ndarray]:
    """``[n, 32, 32]`` noisy grey images; ``square`` positives carry a bright central square,
    ``noise`` is independent of the pixels. Two images per subject, 60/20/20 by subject."""
    rng = np.random.default_rng(seed)
    sq = (rng.random(n) < 0.4).astype(float)
    imgs = (0.3 + 0.1 * rng.random((n, 32, 32))).astype(np.float32)
    imgs[sq == 1, 11:21, 11:21] = 0.9
    labels = pd.DataFrame({"square": sq, "noise": (rng.random(n) < 0.4).astype(float)})
    subjects = np.arange(n) // 2
    split = np.where(subjects % 10 < 6, "train", np.where(subjects % 10 < 8, "val", "test"))
    return imgs, labels, split, subjects


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread (2 OpenMP threads on a shared 2-core CPU ran this
    file 5x slower, mostly spinning)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vit():
    return load_encoder("random", cfg=make_config("smoke"))  # 32 px, patch 8, width 32


# ----------------------------------------------------------------------------- augmentations
def test_augment_images_identity_range_determinism_and_flip():
    x = torch.from_numpy(_toy(6)[0]).unsqueeze(1)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(augment_images(x, IDENTITY, g()), x)
    a, b = augment_images(x, DEFAULT_AUGMENT, g()), augment_images(x, DEFAULT_AUGMENT, g())
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)
    assert not DEFAULT_AUGMENT.hflip  # off by default: a flip moves the heart
    flipped = augment_images(x, ProbeAugment(**{**IDENTITY.__dict__, "hflip": True}), g())
    is_flip = [torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x, strict=True)]
    is_same = [torch.equal(f, o) for f, o in zip(flipped, x, strict=True)]
    assert all(p or q for p, q in zip(is_flip, is_same, strict=True)) and any(is_flip)
    with pytest.raises(ValueError, match="grayscale"):
        augment_images(x[:, 0], DEFAULT_AUGMENT, g())
    with pytest.raises(ValueError, match="crop_scale"):
        ProbeAugment(crop_scale=(0.5, 1.5))


# ------------------------------------------------------------------------------ learning
@pytest.mark.parametrize("source", ["pixels:16", "random"])
def test_learns_a_visible_finding_and_not_an_invisible_one(source, vit):
    imgs, labels, split, subjects = _toy()
    enc = vit if source == "random" else load_encoder(source)
    res = augmented_probe_arrays(enc, imgs, labels, split, subjects, seeds=(0, 1), **FAST)
    assert res.loc["square", "auprc_mean"] > 0.9
    assert res.loc["square", "auroc_mean"] > 0.9
    noise = res.loc["noise"]
    assert abs(noise["auprc_mean"] - noise["prevalence"]) < 0.2
    assert abs(noise["auroc_mean"] - 0.5) < 0.2
    assert res.attrs["kind"] == "augmented cls+mean" and res.attrs["epochs"] == FAST["epochs"]
    assert all(1 <= e <= FAST["epochs"] for v in res.attrs["best_epoch"].values() for e in v)


# -------------------------------------------------------------------------- missing labels
def test_masked_bce_ignores_masked_entries():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    y = (torch.rand(6, 3) < 0.5).float()
    mask = torch.rand(6, 3) < 0.6
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], y[mask])
    grads = []
    for fill in (float("nan"), -1.0, 0.0, 1.0):
        logits.grad = None
        loss = masked_bce(logits, torch.where(mask, y, torch.full_like(y, fill)), mask)
        loss.backward()
        assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
        grads.append(logits.grad.clone())
    assert all(torch.equal(g, grads[0]) for g in grads)
    assert (grads[0][~mask] == 0).all() and (grads[0][mask] != 0).all()
    none = torch.zeros_like(mask)
    logits.grad = None
    empty = masked_bce(logits, y, none)
    empty.backward()
    assert empty.item() == 0 and (logits.grad == 0).all()
    per = class_losses(logits.detach(), y, torch.cat([mask[:, :2], none[:, :1]], 1))
    assert np.isnan(per[2]) and np.isfinite(per[:2]).all()
    with pytest.raises(ValueError, match="same shape"):
        masked_bce(logits, y[:, :2], mask)


def test_missing_labels_are_masked_per_finding(vit):
    imgs, labels, split, subjects = _toy(160)
    tr = np.flatnonzero(split == "train")
    rng = np.random.default_rng(1)
    lab = labels.copy()
    hidden = rng.choice(tr, size=len(tr) // 2, replace=False)
    lab.loc[hidden, "square"] = np.nan  # half the training labels missing
    lab["unknown"] = labels["square"]
    lab.loc[tr, "unknown"] = np.nan  # no training label at all: NaN row
    lab["sparse"] = labels["square"]
    few = tr[[*np.flatnonzero(labels["square"].to_numpy()[tr] == 1)[:3],
              *np.flatnonzero(labels["square"].to_numpy()[tr] == 0)[:3]]]  # fmt: skip
    lab.loc[np.setdiff1d(tr, few), "sparse"] = -1  # 3 positives + 3 negatives labelled
    kw = dict(seeds=(0,), **FAST)
    res = augmented_probe_arrays(vit, imgs, lab, split, subjects, **kw)
    assert res.loc["square", "auprc_mean"] > 0.9
    assert np.isnan(res.loc["unknown", "auprc_mean"]) and res.loc["unknown", "n_test_pos"] > 0
    assert np.isfinite(res.loc["sparse", "auprc_mean"])  # trained on all its six labels
    # masked entries are never read: NaN and -1 for "missing" give the same table
    other = lab.copy()
    other.loc[hidden, "square"] = -1
    other.loc[tr, "unknown"] = -1
    pd.testing.assert_frame_equal(res, augmented_probe_arrays(vit, imgs, other, split,
                                                              subjects, **kw))  # fmt: skip


# ---------------------------------------------------------------------------- determinism
def test_same_seed_same_result(vit):
    imgs, labels, split, subjects = _toy(160)
    before = (vit.training, [b.attn.fused_attn for b in vit.backbone.blocks])
    kw = dict(epochs=3, lr=1e-2, batch_size=32, progress=False)
    a = augmented_probe_arrays(vit, imgs, labels, split, subjects, seeds=(0, 1), **kw)
    b = augmented_probe_arrays(vit, imgs, labels, split, subjects, seeds=(0, 1), **kw)
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs["best_epoch"] == b.attrs["best_epoch"]
    # seed k means the same thing whatever the other seeds of the call (shared views)
    solo = augmented_probe_arrays(vit, imgs, labels, split, subjects, seeds=(1,), **kw)
    pd.testing.assert_series_equal(solo["seed_1"], a["seed_1"])
    # per-seed views: deterministic too
    own = dict(kw, share_views=False, seeds=(0,))
    pd.testing.assert_frame_equal(
        augmented_probe_arrays(vit, imgs, labels, split, subjects, **own),
        augmented_probe_arrays(vit, imgs, labels, split, subjects, **own),
    )
    assert (vit.training, [b.attn.fused_attn for b in vit.backbone.blocks]) == before


# -------------------------------------------------------------- records and table columns
def _dataset(root: Path, imgs: np.ndarray, labels: pd.DataFrame, split, subjects) -> pd.DataFrame:
    (root / "images").mkdir(parents=True)
    paths = []
    for i, im in enumerate(imgs):
        paths.append(f"images/{i:04d}.png")
        Image.fromarray(np.round(im * 255).astype(np.uint8)).save(root / paths[-1])
    rec = pd.DataFrame({"subject_id": [f"s{s}" for s in subjects], "path": paths, "split": split})
    rec = pd.concat([rec, labels], axis=1)
    rec.to_csv(root / "records.csv", index=False)
    return rec


def test_records_call_returns_finding_probe_table(tmp_path, monkeypatch, vit):
    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path / "cache"))
    imgs, labels, split, subjects = _toy(120)
    labels["absent"] = 0.0  # no positive anywhere: a NaN row in both tables
    rec = _dataset(tmp_path / "ds", imgs, labels, split, subjects)
    findings = list(labels.columns)
    x = probe_features(cached_embeddings(vit, tmp_path / "ds", rec, progress=False), "cls+mean")
    fast = finding_probe(x, rec[findings], rec["split"], rec["subject_id"], seeds=(0, 1))
    aug = augmented_probe(vit, tmp_path / "ds", rec, findings, seeds=(0, 1), epochs=2, lr=1e-2,
                          batch_size=32, progress=False)  # fmt: skip
    assert list(aug.columns) == list(fast.columns) and list(aug.index) == findings
    assert aug["auprc_mean"].isna().tolist() == fast["auprc_mean"].isna().tolist()
    assert math.isnan(aug.loc["square", "C"]) and aug.attrs["image_side"] == 32
    # another input side: images read at 48 px, base features embedded here
    big = augmented_probe(vit, tmp_path / "ds", rec, findings, seeds=(0,), epochs=1,
                          progress=False, image_size=48)  # fmt: skip
    assert big.attrs["image_side"] == 48 and np.isfinite(big.loc["square", "auprc_mean"])


def test_bad_arguments(vit):
    imgs, labels, split, subjects = _toy(40)

    def call(**kw):
        args = (kw.pop("imgs", imgs), kw.pop("labels", labels), kw.pop("split", split))
        return augmented_probe_arrays(vit, *args, subjects, progress=False, **kw)

    with pytest.raises(ValueError, match="agree on N"):
        call(imgs=imgs[:-1])
    with pytest.raises(ValueError, match="train, val and test"):
        call(split=np.where(split == "val", "train", split))
    with pytest.raises(ValueError, match="subsample"):
        call(subsample=0.0)
    with pytest.raises(ValueError, match="epochs"):
        call(epochs=0)
    with pytest.raises(ValueError, match="0/1"):
        call(labels=labels.assign(square=labels["square"] * 2))
    with pytest.raises(ValueError, match="lack the columns"):
        augmented_probe(vit, ".", pd.DataFrame({"path": []}), ["square"])


def test_training_views_use_the_base_features_weights(vit, monkeypatch):
    """Under bf16 the augmented training views go through the same bf16-parameter copy as
    embed_array's validation and test features: un-augmented, they are those features."""
    import raddino_lib.eval.augmented_probe as ap
    from raddino_lib.eval.embed import embed_array

    imgs, labels, split, subjects = _toy(64)
    made = []

    class Spy(ap._Views):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(ap, "_Views", Spy)
    augmented_probe_arrays(vit, imgs, labels, split, subjects, seeds=(0,), epochs=1,
                           lr=1e-2, batch_size=32, progress=False, precision="bf16",
                           embed_batch_size=64)  # fmt: skip
    rows = torch.arange(64)
    got = made[0](rows, None, torch.Generator().manual_seed(0)).numpy()
    base = probe_features(embed_array(vit, imgs, batch_size=64, precision="bf16"), "cls+mean")
    assert np.array_equal(got, base)
    assert all(p.dtype == torch.float32 for p in vit.parameters())  # the caller's stays fp32
