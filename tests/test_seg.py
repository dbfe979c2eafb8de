"""Segmentation: Dice, loss, heads, U-Net, data split and augmentation, the training loop."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from raddino_lib.seg.data import augment, seg_records, split_by_subject
from raddino_lib.seg.heads import build_head, head_layers, upsample_logits
from raddino_lib.seg.loss import bce_dice_loss
from raddino_lib.seg.metrics import dice_per_image, dice_summary, paired_dice_difference
from raddino_lib.seg.train import _targets_at, _val_loss, fit, group_loss, predict_masks
from raddino_lib.seg.unet import UNet

torch.set_num_threads(1)  # two xdist workers on two cores


# ------------------------------------------------------------------------------- Dice
def _m(*cells: tuple[int, int], size: int = 4) -> np.ndarray:
    m = np.zeros((size, size), bool)
    for r, c in cells:
        m[r, c] = True
    return m


def test_dice_on_hand_made_masks() -> None:
    empty = _m()
    a = _m((0, 0), (0, 1), (1, 0), (1, 1))
    b = _m((0, 0), (0, 1), (2, 2), (3, 3))
    pred = np.stack([np.stack([empty, a, a, empty, a])])  # [1, 5, 4, 4]
    true = np.stack([np.stack([empty, empty, a, a, b])])
    d = dice_per_image(pred, true)
    # both empty = 1; one empty = 0 (both ways); identical = 1; overlap 2 of 4 + 4 = 0.5
    np.testing.assert_allclose(d, [[1.0, 0.0, 1.0, 0.0, 0.5]])


def test_dice_summary_averages_classes_then_images() -> None:
    d = np.array([[1.0, 0.5], [0.0, 0.5], [1.0, 1.0]])
    s = dice_summary(d)
    per_image = np.array([0.75, 0.25, 1.0])
    assert s["mean"] == pytest.approx(per_image.mean())
    assert s["std"] == pytest.approx(per_image.std())
    assert s["n"] == 3
    assert "mean_present" not in s
    # an image without the structure, left empty, scores 1 and lifts the mean; mean_present
    # is over the images that have it
    s = dice_summary(d, present=np.array([True, True, False]))
    assert s["mean_present"] == pytest.approx(0.5) and s["n_present"] == 2
    assert np.isnan(dice_summary(d, present=np.zeros(3, bool))["mean_present"])
    with pytest.raises(ValueError, match="present"):
        dice_summary(d, present=np.ones(2, bool))


def test_paired_dice_difference_verdicts() -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(0.6, 0.8, 200)
    up = paired_dice_difference(b + 0.05, b, seed=0)
    assert up["diff"] == pytest.approx(0.05) and up["lo"] == pytest.approx(0.05)
    assert up["verdict"] == "held"
    assert paired_dice_difference(b - 0.05, b)["verdict"] == "did not hold"
    # 2 points behind, but within a 3-point margin
    assert paired_dice_difference(b - 0.02, b, margin=0.03)["verdict"] == "held"
    noisy = paired_dice_difference(b + rng.normal(0, 0.1, 200), b, seed=0)
    assert noisy["lo"] < 0 < noisy["hi"] and noisy["verdict"] == "inconclusive"
    assert paired_dice_difference(b + rng.normal(0, 0.1, 200), b, seed=0)["n"] == 200
    # two models that never find a structure tie at 1 on the images without it
    a = np.array([1.0, 1.0, 0.0, 0.0])
    present = np.array([False, False, True, True])
    res = paired_dice_difference(a, a.copy(), margin=0.03, present=present)
    assert res["verdict"] == "not measured"
    found = paired_dice_difference(np.array([1.0, 1.0, 0.5, 0.0]), a, present=present)
    assert found["verdict"] != "not measured"
    with pytest.raises(ValueError, match="present"):
        paired_dice_difference(a, a, present=present[:3])


def test_dice_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[N, K, H, W\]"):
        dice_per_image(np.zeros((1, 2, 4, 4)), np.zeros((1, 1, 4, 4)))


# ------------------------------------------------------------------------------- loss
def test_bce_dice_loss_hand_computed() -> None:
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # BCE = log 2 at every pixel; soft Dice = (2 * 0.5 + 1) / (2 + 1 + 1) = 0.5
    want = math.log(2) + (1 - 0.5)
    assert float(bce_dice_loss(logits, target)) == pytest.approx(want, rel=1e-6)


def test_batch_dice_is_one_dice_over_all_pixels() -> None:
    # image 0: a 1-pixel structure, p = 0.5 everywhere; image 1: empty truth, empty prediction
    logits = torch.stack([torch.zeros(1, 2, 2), torch.full((1, 2, 2), -1e4)])
    target = torch.zeros(2, 1, 2, 2)
    target[0, 0, 0, 0] = 1.0
    bce = (4 * math.log(2) + 0.0) / 8  # image 1's pixels cost nothing
    # per image: image 0's Dice (2*0.5 + 1) / (2 + 1 + 1) = 0.5, image 1's 1 / 1 = 1
    assert float(bce_dice_loss(logits, target)) == pytest.approx(bce + 1 - 0.75, rel=1e-5)
    # over the batch: (2*0.5 + 1) / (2 + 1 + 1) = 0.5; the empty image adds nothing
    got = float(bce_dice_loss(logits, target, dice_over="batch"))
    assert got == pytest.approx(bce + 1 - 0.5, rel=1e-5)
    # false positives on the empty image enter the batch denominator: 4 pixels at p = 0.5
    logits[1] = 0.0
    bce2 = 8 * math.log(2) / 8
    want = bce2 + 1 - (2 * 0.5 + 1) / (4 + 1 + 1)
    assert float(bce_dice_loss(logits, target, dice_over="batch")) == pytest.approx(want, 1e-5)
    with pytest.raises(ValueError, match="dice_over"):
        bce_dice_loss(logits, target, dice_over="pixel")


def test_per_class_loss_and_soft_targets() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 8, 8, generator=g)
    target = torch.rand(3, 4, 8, 8, generator=g) > 0.6
    per_class = bce_dice_loss(logits, target, reduction="none")
    assert per_class.shape == (4,)
    for k in range(4):  # each class's entry is the scalar loss of that class alone
        want = float(bce_dice_loss(logits[:, k : k + 1], target[:, k : k + 1]))
        assert float(per_class[k]) == pytest.approx(want, rel=1e-6)
    assert float(per_class.mean()) == pytest.approx(float(bce_dice_loss(logits, target)))
    # a 2x2-pooled mask is the fraction of each block that is inside
    m = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    m[0, 0, 0, :3] = True
    soft = _targets_at(m, 2)
    np.testing.assert_allclose(soft[0, 0].numpy(), [[0.5, 0.25], [0.0, 0.0]])
    assert _targets_at(m, 4) is m
    with pytest.raises(ValueError, match="must divide"):
        _targets_at(m, 3)


def test_group_loss_is_the_mean_of_the_groups() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 5, generator=g)
    target = torch.rand(2, 3, 5, 5, generator=g) > 0.5
    a = bce_dice_loss(logits[:, :1], target[:, :1])
    b = bce_dice_loss(logits[:, 1:], target[:, 1:])
    assert float(group_loss(logits, target, [[0], [1, 2]])) == pytest.approx(float(a + b) / 2)
    assert float(group_loss(logits, target, None)) == pytest.approx(
        float(bce_dice_loss(logits, target))
    )


# ------------------------------------------------------------------------------ heads
@pytest.mark.parametrize(
    ("image", "patch", "dim"),
    [(32, 8, 16), (518, 14, 8), (70, 14, 8)],  # grids 4, 37 (ViT-B/14 at 518), 5 (odd)
)
@pytest.mark.parametrize("head", ["linear", "vitdet", "upernet"])
def test_head_output_shapes(image: int, patch: int, dim: int, head: str) -> None:
    g = image // patch
    n_maps = 4 if head == "upernet" else (2 if head == "linear" else 1)
    h = build_head(head, dim, 3, channels=8, linear_layers=n_maps if head == "linear" else 1)
    h.eval()
    feats = [torch.randn(2, dim, g, g) for _ in range(n_maps)]
    out = h(feats)
    factor = 1 if head == "linear" else 4
    assert out.shape == (2, 3, factor * g, factor * g)
    assert upsample_logits(out, image).shape == (2, 3, image, image)


def test_heads_refuse_the_wrong_number_of_maps() -> None:
    with pytest.raises(ValueError, match="expects 4 feature map"):
        build_head("upernet", 8, 2, channels=8)([torch.randn(1, 8, 4, 4)])
    with pytest.raises(ValueError, match=r"\[B, 8, h, w\]"):
        build_head("linear", 8, 2)([torch.randn(1, 6, 4, 4)])


def test_head_layers() -> None:
    assert head_layers(12, "upernet") == (2, 5, 8, 11)
    assert head_layers(6, "upernet") == (1, 2, 4, 5)
    assert head_layers(2, "upernet") == (0, 0, 1, 1)
    assert head_layers(12, "linear") == (11,)
    assert head_layers(12, "linear", 4) == (8, 9, 10, 11)
    assert head_layers(6, "vitdet") == (5,)
    with pytest.raises(ValueError, match="unknown head"):
        head_layers(6, "fcn")


def test_unet_keeps_any_side() -> None:
    net = UNet(2, "tu-tinynet_e", decoder_channels=(16, 8, 8, 8, 8)).eval()
    with torch.no_grad():
        assert net([torch.rand(1, 1, 40, 40)]).shape == (1, 2, 40, 40)
        assert net([torch.rand(1, 1, 64, 64)]).shape == (1, 2, 64, 64)


def test_unet_unknown_encoder_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="could not build a U-Net"):
        UNet(2, "not-an-encoder")


# ------------------------------------------------------------------------------- data
def _records(n_subj: int = 30) -> pd.DataFrame:
    rows = []
    for s in range(n_subj):
        for k in range(1 + s % 3):
            rows.append(
                {
                    "subject_id": f"S{s:03d}",
                    "image_id": f"I{s:03d}_{k}",
                    "view": "LATERAL" if k == 2 else "PA",
                    "mask_path": "" if k == 2 else f"masks/I{s:03d}_{k}.npz",
                }
            )
    return pd.DataFrame(rows)


def test_split_by_subject_keeps_subjects_whole() -> None:
    df = _records(40)
    split = split_by_subject(df, seed=3)
    per_subject = split.groupby(df["subject_id"]).nunique()
    assert (per_subject == 1).all()
    counts = split.groupby(df["subject_id"]).first().value_counts()
    assert counts["train"] == 28 and counts["val"] == 6 and counts["test"] == 6
    assert split.equals(split_by_subject(df, seed=3))
    assert not split.equals(split_by_subject(df, seed=4))


def test_seg_records_frontal_with_masks_and_whole_subjects() -> None:
    df = _records(30)
    out = seg_records(df, max_images=20, seed=0)
    assert (out["view"] != "LATERAL").all() and (out["mask_path"] != "").all()
    assert len(out) <= 20
    kept = set(out["subject_id"])
    frontal = df[df["view"] != "LATERAL"]
    assert len(out) == int(frontal["subject_id"].isin(kept).sum())  # whole subjects
    with pytest.raises(ValueError, match="mask_path is empty"):
        seg_records(df.assign(mask_path=""))


def test_augment_moves_image_and_masks_together() -> None:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(4, 1, 64, 64, dtype=torch.bool)
    masks[:, :, 20:44, 10:30] = True
    images = masks.float() * 0.8 + 0.1
    img, msk = augment(images, masks, g)
    assert img.shape == images.shape and msk.shape == masks.shape and msk.dtype == torch.bool
    assert not torch.equal(msk, masks)  # it moved
    for i in range(4):  # the bright region is where the mask went
        inside = img[i, 0][msk[i, 0]].mean()
        outside = img[i, 0][~msk[i, 0]].mean()
        assert inside > outside + 0.3
        # mask area stays within the scale range squared
        ratio = float(msk[i].sum()) / float(masks[i].sum())
        assert 0.7 < ratio < 1.3
    same_img, same_msk = augment(images, masks, torch.Generator().manual_seed(0), strength=0.0)
    assert torch.equal(same_msk, masks)
    torch.testing.assert_close(same_img, images, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------- training loop
def test_fit_restores_the_best_validation_state() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 4, 6, 6, generator=g)
    masks = (x[:, :1] > 0).numpy()  # a linear rule the head can learn
    torch.manual_seed(0)  # the head's initialisation must not depend on which tests ran first
    head = build_head("linear", 4, 1)
    res = fit(
        head, [x], masks, np.arange(16), np.arange(16, 24), steps=100, batch_size=8, lr=5e-2,
        eval_every=5, seed=0,
    )  # fmt: skip
    losses = [h["val_loss"] for h in res.history]
    assert res.best_val_loss == pytest.approx(min(losses))
    assert res.best_step == res.history[int(np.argmin(losses))]["step"]
    # the weights left in the model are the ones that scored best_val_loss
    cpu = torch.device("cpu")
    again = _val_loss(head, [x], masks, np.arange(16, 24), 6, 16, cpu, "fp32", None, 6, "image")
    assert again == pytest.approx(res.best_val_loss, rel=1e-5)
    pred = predict_masks(head, [x], np.arange(16, 24), 6)
    assert dice_summary(dice_per_image(pred, masks[16:]))["mean"] > 0.9
    # validation truth inverted: training makes it worse, so the first check is the best
    flipped = masks.copy()
    flipped[16:] = ~flipped[16:]
    torch.manual_seed(0)
    head = build_head("linear", 4, 1)
    res = fit(head, [x], flipped, np.arange(16), np.arange(16, 24), steps=40, batch_size=8,
              lr=5e-2, eval_every=5, seed=0)  # fmt: skip
    losses = [h["val_loss"] for h in res.history]
    assert res.best_step == 5 and losses[-1] > losses[0]
    again = _val_loss(head, [x], flipped, np.arange(16, 24), 6, 16, cpu, "fp32", None, 6, "image")
    assert again == pytest.approx(losses[0], rel=1e-5)
    # the loss at half the mask side still learns the rule; Dice is scored at full side
    torch.manual_seed(0)
    head = build_head("linear", 4, 1)
    res = fit(head, [x], masks, np.arange(16), np.arange(16, 24), steps=100, batch_size=8,
              lr=5e-2, eval_every=5, seed=0, loss_size=3)  # fmt: skip
    pred = predict_masks(head, [x], np.arange(16, 24), 6)
    assert pred.shape == (8, 1, 6, 6)
    assert dice_summary(dice_per_image(pred, masks[16:]))["mean"] > 0.8
    with pytest.raises(ValueError, match="must divide"):
        fit(head, [x], masks, np.arange(16), np.arange(16, 24), steps=1, batch_size=8,
            lr=1e-3, eval_every=1, loss_size=4)  # fmt: skip
    with pytest.raises(ValueError, match="training and validation rows"):
        fit(head, [x], masks, np.arange(16), np.arange(0), steps=1, batch_size=8, lr=1e-3,
            eval_every=1)  # fmt: skip


# --------------------------------------------------------------- overfitting 8 images
@pytest.fixture(scope="module")
def phantom_views(tmp_path_factory):
    from raddino_lib.data.phantom import generate_dataset
    from raddino_lib.data.records import load_records
    from raddino_lib.seg.data import make_views

    root = tmp_path_factory.mktemp("seg") / "ph"
    generate_dataset(root, 16, size=64, seed=5, workers=1, progress=False)
    rec = seg_records(load_records(root)).head(8).copy()
    assert len(rec) == 8
    rec["seg_split"] = "train"
    views = make_views(root, rec, tasks=("lungs",), size=64, n_views=0, progress=False)
    return views


def test_a_head_overfits_eight_phantom_images(phantom_views) -> None:
    from raddino_lib.config import make_config
    from raddino_lib.models.registry import load_encoder
    from raddino_lib.seg.experiment import encoder_maps

    cfg = make_config("smoke", progress=False, image_size=64, embed_dim=32, depth=2)
    enc = load_encoder("random", cfg=cfg, seed=0)
    layers = head_layers(enc.num_layers, "upernet")
    maps = encoder_maps(enc, phantom_views, layers, cfg)
    assert maps[1].shape == (8, 32, 8, 8)
    torch.manual_seed(0)
    head = build_head("upernet", 32, 2, channels=16)
    rows = np.arange(8)
    masks = phantom_views.task_masks("lungs")
    inputs = [maps[i] for i in layers]
    fit(head, inputs, masks, rows, rows, steps=150, batch_size=8, lr=3e-3, eval_every=25)
    pred = predict_masks(head, inputs, rows, 64)
    assert dice_summary(dice_per_image(pred, masks))["mean"] > 0.9


def test_few_shot_subsets_are_nested_and_views_follow(phantom_views) -> None:
    from raddino_lib.seg.data import SegViews
    from raddino_lib.seg.experiment import _train_rows, few_shot_sources

    v = phantom_views
    views = SegViews(
        images=np.concatenate([v.images, v.images]), masks=np.concatenate([v.masks, v.masks]),
        split=np.concatenate([v.split, v.split]), source=np.concatenate([v.source, v.source]),
        view=np.concatenate([v.view, v.view + 1]), channels=v.channels, records=v.records,
    )  # fmt: skip
    small, big, every = (few_shot_sources(views, n, seed=1) for n in (2, 5, 0))
    assert len(small) == 2 and len(big) == 5 and len(every) == 8
    assert set(small) <= set(big) <= set(every)
    rows = _train_rows(views, small)
    assert len(rows) == 4 and set(views.source[rows]) == set(small)  # both views of each


def test_steps_follow_epochs_when_asked() -> None:
    from raddino_lib.config import make_config
    from raddino_lib.seg.experiment import _steps

    cfg = make_config("smoke", seg_batch_size=10, seg_epochs=3)
    assert _steps(cfg, 4, 95) == 29  # ceil(3 * 95 / 10)
    assert _steps(cfg, 40, 95) == 40
    with pytest.raises(ValueError, match="nothing to train"):
        _steps(make_config("smoke", seg_epochs=0), 0, 10)


class _RowSpy(torch.nn.Module):
    """Logits of zeros; records the row ids it is fed (inputs hold the row id everywhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        if self.training:
            self.seen.append(xs[0][:, 0, 0, 0].long().tolist())
        return xs[0].expand(-1, 3, -1, -1) * 0 + self.w


def test_positive_share_fills_batches_with_rare_structures() -> None:
    from raddino_lib.seg.experiment import _rare_positive_rows

    n = 40
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    masks = np.zeros((n, 3, 4, 4), bool)
    masks[:, 0, 1:3, 1:3] = True  # "lungs" on every image: not rare
    masks[[3, 7, 11, 30], 1, 0, 0] = True  # a rare structure on 4 images (2 of them train)
    masks[[5], 2, 2, 2] = True  # another rare task's structure on one image
    train, val = np.arange(20), np.arange(20, n)
    pos = _rare_positive_rows(masks, train, [[0], [1], [2]])
    assert pos.tolist() == [3, 5, 7, 11]
    assert _rare_positive_rows(masks, train, [[0, 1, 2]]).size == 0  # one group: lungs common
    spy = _RowSpy()
    fit(spy, [x], masks, train, val, steps=10, batch_size=8, lr=1e-3, eval_every=10,
        positive_rows=pos, positive_share=0.5)  # fmt: skip
    assert len(spy.seen) == 10
    for b in spy.seen:
        assert len(b) == 8 and set(b) <= set(train.tolist())
        assert set(b[4:]) <= set(pos.tolist())  # the last half from the rare rows
    rare_seen = sum(r in pos for b in spy.seen for r in b)
    assert rare_seen >= 40  # at least half of 80 drawn rows; natural share is 4/20
    # every training row still comes round: 10 steps x 4 open slots = 2 epochs of 20
    assert {r for b in spy.seen for r in b[:4]} == set(train.tolist())
    spy = _RowSpy()
    fit(spy, [x], masks, train, val, steps=5, batch_size=8, lr=1e-3, eval_every=5)
    assert sorted(spy.seen[0] + spy.seen[1] + spy.seen[2][:4]) == train.tolist()
    with pytest.raises(ValueError, match="positive_share"):
        fit(spy, [x], masks, train, val, steps=1, batch_size=8, lr=1e-3, eval_every=1,
            positive_rows=pos, positive_share=1.0)  # fmt: skip


def test_task_groups() -> None:
    from raddino_lib.seg.experiment import _groups

    tasks = ("lungs", "zones", "ribs")
    assert _groups(tasks, True) == [tasks]
    assert _groups(tasks, False) == [("lungs",), ("zones",), ("ribs",)]
    assert _groups(tasks, True, ("ribs",)) == [("lungs", "zones"), ("ribs",)]
    assert _groups(("ribs",), True, ("ribs",)) == [("ribs",)]
    with pytest.raises(ValueError, match="unknown segmentation task 'rib'"):
        _groups(tasks, True, ("rib",))


# ------------------------------------------------------------------- cached models
def test_trained_models_come_back_from_the_cache(tmp_path, monkeypatch) -> None:
    """A second run with the same key trains nothing and runs no encoder, and returns the
    same numbers; a changed setting retrains; a corrupted file is reported and retrained."""
    import warnings

    import raddino_lib.seg.experiment as ex
    from raddino_lib.config import make_config
    from raddino_lib.data.phantom import generate_dataset
    from raddino_lib.data.records import load_records
    from raddino_lib.models.registry import load_encoder
    from raddino_lib.seg.cache import SegCacheRebuildWarning
    from raddino_lib.seg.data import make_views

    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "ph"
    generate_dataset(root, 16, size=64, seed=5, workers=1, progress=False)
    rec = seg_records(load_records(root)).head(10).copy()
    rec["seg_split"] = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    views = make_views(root, rec, tasks=("lungs",), size=32, n_views=0, progress=False)
    cfg = make_config("smoke", progress=False, image_size=32, embed_dim=16, depth=2,
                      seg_tasks=("lungs",), seg_shots=(2,))  # fmt: skip
    enc = {"r": load_encoder("random", cfg=cfg, seed=0)}
    rows, fs = [("r", "linear")], [("r", "linear")]
    ex_rows = views.rows("test")
    first = ex.run_segmentation(cfg, views, enc, rows, few_shot_rows=fs, example_rows=ex_rows)
    files = list((tmp_path / "cache" / "seg").glob("*.safetensors"))
    assert len(files) == 4  # the head, two few-shot points, the U-Net
    assert "cached" not in first.table

    def no_encoder(*a, **k):
        raise AssertionError("a fully cached run must not embed anything")

    monkeypatch.setattr(ex, "encoder_maps", no_encoder)
    second = ex.run_segmentation(cfg, views, enc, rows, few_shot_rows=fs, example_rows=ex_rows)
    assert second.table["cached"].all() and second.few_shot["cached"].all()
    cols = ["encoder", "head", "task", "mean", "std", "n", "seconds", "best_step"]
    pd.testing.assert_frame_equal(first.table[cols], second.table[cols])
    pd.testing.assert_frame_equal(first.few_shot[cols[:2] + ["n_train", "mean"]],
                                  second.few_shot[cols[:2] + ["n_train", "mean"]])  # fmt: skip
    for k, v in first.per_image.items():
        np.testing.assert_array_equal(second.per_image[k], v)
    for k, v in first.examples.items():
        assert second.examples[k].dtype == bool
        np.testing.assert_array_equal(second.examples[k], v)
    # another number of steps is another model: the head retrains (the encoder runs again)
    with pytest.raises(AssertionError, match="must not embed"):
        more = dataclasses.replace(cfg, seg_steps=5)
        ex.run_segmentation(more, views, enc, rows, example_rows=ex_rows, unet=False)
    # features of another embedding-cache version make another model: the head retrains
    import raddino_lib.seg.cache as sc

    monkeypatch.setattr(sc, "EMBEDDING_VERSION", "next")
    with pytest.raises(AssertionError, match="must not embed"):
        ex.run_segmentation(cfg, views, enc, rows, example_rows=ex_rows, unet=False)
    monkeypatch.undo()
    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path / "cache"))
    for f in (tmp_path / "cache" / "seg").glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:-7])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        third = ex.run_segmentation(cfg, views, enc, rows, example_rows=ex_rows, unet=False)
    assert any(issubclass(x.category, SegCacheRebuildWarning) for x in w)
    assert "cached" not in third.table
    np.testing.assert_allclose(third.table["mean"], first.table.query("encoder == 'r'")["mean"])
