"""Phantom generator: determinism, format, labels vs masks, errors, pixel-shortcut floor."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from raddino_lib.data import schema
from raddino_lib.data.phantom import generate_dataset
from raddino_lib.data.records import load_image, load_masks, load_records


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def ds128(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ph") / "ds128"
    s = generate_dataset(out, 240, size=128, seed=3, workers=2, progress=False)
    assert s.n_images == 240 and s.images_per_second > 0
    return out


def test_determinism_and_worker_independence(tmp_path):
    a = generate_dataset(tmp_path / "a", 40, size=64, seed=11, workers=1, progress=False)
    generate_dataset(tmp_path / "b", 40, size=64, seed=11, workers=2, progress=False)
    generate_dataset(tmp_path / "c", 40, size=64, seed=12, workers=2, progress=False)
    da, db, dc = _digests(tmp_path / "a"), _digests(tmp_path / "b"), _digests(tmp_path / "c")
    assert a.n_images == 40
    assert da == db  # byte-identical, including PNGs, npz and dataset.json
    assert len(da) >= 40 + 2
    same = [k for k in da if k.startswith("images/") and da[k] == dc.get(k)]
    assert not same  # a different seed changes every image


def test_overwrite_and_bad_arguments(tmp_path):
    out = tmp_path / "ds"
    generate_dataset(out, 3, size=32, progress=False, workers=1)
    with pytest.raises(ValueError, match="not empty"):
        generate_dataset(out, 3, size=32, progress=False, workers=1)
    generate_dataset(out, 2, size=32, progress=False, workers=1, overwrite=True)
    assert len(load_records(out)) == 2
    with pytest.raises(ValueError, match="n must be"):
        generate_dataset(tmp_path / "x", 0)
    with pytest.raises(ValueError, match="size must be"):
        generate_dataset(tmp_path / "y", 5, size=16)
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing"):
        generate_dataset(other, 2, size=32, overwrite=True, progress=False)
    assert (other / "precious.txt").read_text() == "keep me"


def test_records_format_and_labels(ds128):
    df = load_records(ds128)  # validates columns, 0/1, no_finding, bmi, subject splits
    assert tuple(df.columns) == schema.RECORD_COLUMNS
    assert (df.groupby("subject_id")["split"].nunique() == 1).all()
    subj = df.drop_duplicates("subject_id")
    frac = subj["split"].value_counts(normalize=True)
    assert 0.58 < frac["train"] < 0.82 and 0.06 < frac["val"] < 0.26 and 0.06 < frac["test"] < 0.26
    assert df["subject_id"].nunique() < len(df)  # several images per subject
    others = df[[f for f in schema.FINDINGS if f != "no_finding"]].sum(axis=1)
    assert ((others == 0) == (df["no_finding"] == 1)).all()
    assert (df.loc[df["chest_tube"] == 1, "support_devices"] == 1).all()
    bmi = df["weight"] / (df["height"] / 100) ** 2
    assert np.allclose(bmi, df["bmi"], atol=0.01)
    assert set(df["cohort"]) == {"icu", "inpatient", "outpatient", "screening"}
    assert set(df["view"]) == set(schema.VIEWS)
    assert (df.loc[df["view"] == "LATERAL", "mask_path"] == "").all()
    assert df.loc[df["cohort"] == "icu", "view"].ne("LATERAL").all()
    # Cohorts differ: devices far more frequent in icu than screening.
    sd = df.groupby("cohort")["support_devices"].mean()
    assert sd["icu"] > sd["screening"] + 0.15
    img = load_image(ds128, df.iloc[0])
    assert img.shape == (128, 128) and img.dtype == np.float32 and 0 <= img.min() < img.max() <= 1


def _ctr(m: dict[str, np.ndarray]) -> float:
    def width(mask):
        rows = mask.any(axis=1)
        return max((np.ptp(np.flatnonzero(r)) + 1 for r in mask[rows]), default=0)

    return width(m["heart"]) / max(width(m["thorax"]), 1)


def test_masks_agree_with_labels_and_anatomy(ds128):
    df = load_records(ds128)
    frontal = df[df["view"] != "LATERAL"]
    n_rib_nonempty = []
    ctr_ok = []
    for _, row in frontal.iterrows():
        m = load_masks(ds128, row)
        assert set(m) == set(schema.MASK_NAMES)
        for side in ("right", "left"):
            lung = m[f"lung_{side}"]
            zones = [m[f"zone_{side}_{z}"] for z in ("upper", "mid", "lower")]
            assert lung.sum() > 0
            assert np.array_equal(zones[0] | zones[1] | zones[2], lung)
            assert not (zones[0] & zones[1]).any() and not (zones[1] & zones[2]).any()
            assert not (zones[0] & zones[2]).any()
        assert not (m["lung_right"] & m["lung_left"]).any()
        assert bool(m["pneumothorax"].any()) == bool(row["pneumothorax"])
        assert bool(m["chest_tube"].any()) == bool(row["chest_tube"])
        n_rib_nonempty.append(sum(m[r].any() for r in schema.RIB_MASKS))
        if row["view"] == "PA":
            ctr = _ctr(m)
            if abs(ctr - 0.5) > 0.04:
                ctr_ok.append((ctr > 0.5) == bool(row["cardiomegaly"]))
    assert np.mean(n_rib_nonempty) >= 18
    assert len(ctr_ok) > 20 and np.mean(ctr_ok) >= 0.95


def test_no_pixel_shortcut(tmp_path):
    """Logistic regression on 16x16 raw pixels must not read findings off fixed pixels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    out = tmp_path / "px"
    generate_dataset(out, 600, size=64, seed=5, workers=2, progress=False)
    df = load_records(out)
    X = np.stack(
        [
            load_image(out, r).reshape(16, 4, 16, 4).mean(axis=(1, 3)).ravel()
            for _, r in df.iterrows()
        ]
    )
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    train = (df["split"] == "train").to_numpy()
    results = {}
    for f in schema.FINDINGS:
        y = df[f].to_numpy(dtype=int)
        if y[train].sum() < 15 or y[~train].sum() < 8:
            continue
        clf = LogisticRegression(C=0.1, max_iter=400).fit(X[train], y[train])
        results[f] = average_precision_score(y[~train], clf.predict_proba(X[~train])[:, 1])
    print("raw-pixel AUPRC:", {k: round(v, 3) for k, v in results.items()})
    assert len(results) >= 5
    assert max(results.values()) < 0.97


class _RecordingGlyphs(dict):
    """GLYPHS stand-in that records which marker letter each image gets (in render order)."""

    def __init__(self, base: dict) -> None:
        super().__init__(base)
        self.seen: list[str] = []

    def __getitem__(self, key):
        self.seen.append(key)
        return super().__getitem__(key)


@pytest.fixture(scope="module")
def ds64_markers(tmp_path_factory):
    """700 images at 64 px (~600 frontal), rendered in-process with the marker letters recorded."""
    from raddino_lib.data.phantom import render

    out = tmp_path_factory.mktemp("cue") / "ds64"
    rec = _RecordingGlyphs(render.GLYPHS)
    mp = pytest.MonkeyPatch()
    mp.setattr(render, "GLYPHS", rec)
    try:
        generate_dataset(out, 700, size=64, seed=21, workers=1, progress=False)
    finally:
        mp.undo()
    df = load_records(out)
    assert len(rec.seen) == len(df)  # one marker per image, in image order
    return out, df, np.array([s == "L" for s in rec.seen])


def test_no_trivial_cue(ds64_markers):
    """Neither the global brightness nor the (random) burned-in side marker predicts a finding."""
    from sklearn.metrics import average_precision_score

    out, df, marker_l = ds64_markers
    frontal = (df["view"] != "LATERAL").to_numpy()
    sub = df[frontal]
    mean = np.array([load_image(out, r).mean() for _, r in sub.iterrows()])
    scores, worst = {}, {}
    for f in schema.FINDINGS:
        y = sub[f].to_numpy(dtype=int)
        if y.sum() < 8 or y.sum() == len(y):
            continue
        prev = y.mean()
        ap = max(average_precision_score(y, mean), average_precision_score(y, -mean))
        apm = max(
            average_precision_score(y, marker_l[frontal]),
            average_precision_score(y, ~marker_l[frontal]),
        )
        scores[f] = (round(float(prev), 3), round(float(ap), 3), round(float(apm), 3))
        worst[f] = max(ap, apm) - prev
    print("finding: (prevalence, AUPRC mean intensity (+/-), AUPRC marker (L/R)):", scores)
    assert len(scores) >= 8 and frontal.sum() >= 550
    assert max(worst.values()) < 0.35, worst
    # The marker letter is random (~70% "L") and independent of the findings.
    assert 0.6 < marker_l.mean() < 0.8
    for f in schema.FINDINGS:
        y = df[f].to_numpy(dtype=bool)
        if 20 <= y.sum() <= len(y) - 20:
            assert abs(marker_l[y].mean() - marker_l[~y].mean()) < 0.2, f
