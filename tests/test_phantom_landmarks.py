"""True phantom landmarks agree with the masks the renderer draws, and are fast and safe.

Masks on disk are clipped to the collimator's exposed field (apices and costophrenic angles
are often blanked), so the geometric checks re-render each frontal image through the real
``render_task`` path with the collimator clip switched off; the stored masks must then equal
the re-rendered ones inside the exposed field, which proves the re-render is the stored image.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raddino_lib.data.phantom import generate as gen
from raddino_lib.data.phantom import render
from raddino_lib.data.phantom.anatomy import Pose
from raddino_lib.data.phantom.generate import generate_dataset, iter_tasks
from raddino_lib.data.phantom.landmarks import (
    LANDMARK_COLUMNS,
    LANDMARKS,
    frontal_landmarks,
    landmark_table,
    landmarks_for,
    to_pixels,
)
from raddino_lib.data.records import load_masks, load_records

SEED, N = 0, 60


def _unclipped_masks(root: Path, rec: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """image_id -> masks of each frontal record, re-rendered without the collimator clip.

    Also checks that the stored masks are these masks inside the exposed field.
    """
    info = json.loads((root / "dataset.json").read_text())
    seed, size = int(info["seed"]), int(info["size"])
    captured: dict = {}
    orig_finish, orig_render = render.finish, gen.render_image

    def finish(img, cohort, view, rng):
        out, exposed = orig_finish(img, cohort, view, rng)
        captured["exposed"] = exposed
        return out, np.ones_like(exposed)

    def render_image(*args, **kwargs):
        img, masks = orig_render(*args, **kwargs)
        captured["masks"] = masks
        return img, masks

    scratch = root.parent / f"{root.name}_rerender"
    (scratch / "images").mkdir(parents=True, exist_ok=True)
    (scratch / "masks").mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, np.ndarray]] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(render, "finish", finish)
        mp.setattr(gen, "render_image", render_image)
        for _, row in rec[rec["view"] != "LATERAL"].iterrows():
            i = int(row["subject_id"][1:])
            j = int(row["study_id"].split("_")[1])
            k = int(row["image_id"][1:])
            gen.render_task(gen.Task(k, i, j, row["view"], seed, size, str(scratch)))
            masks, exposed = captured["masks"], captured["exposed"]
            stored = load_masks(root, row)
            for name in ("lung_right", "lung_left", "heart"):
                assert np.array_equal(stored[name], masks[name] & exposed), (row.image_id, name)
            out[row["image_id"]] = masks
    return out


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """(root, records, landmarks, unclipped masks) for the 128 px and 64 px datasets."""
    base = tmp_path_factory.mktemp("lm")
    out = {}
    for size in (128, 64):
        root = base / f"ds{size}"
        generate_dataset(root, N, size=size, seed=SEED, workers=1, progress=False)
        rec = load_records(root)
        out[size] = (root, rec, landmark_table(root, rec), _unclipped_masks(root, rec))
    return out


def _geometry(root: Path, row: pd.Series) -> tuple[Pose, render.Frontal]:
    """The renderer's pose and frontal geometry of a record."""
    seed = json.loads((root / "dataset.json").read_text())["seed"]
    subj = gen.make_subject(seed, int(row["subject_id"][1:]))
    pose, _ = gen.image_pose(seed, int(row["image_id"][1:]), row["view"], subj.anat)
    return pose, render.frontal_geometry(subj.anat, pose, row["view"])


def _frontal(rec: pd.DataFrame) -> pd.Series:
    return rec["view"] != "LATERAL"


def _pt(lm: pd.DataFrame, idx, name: str) -> np.ndarray:
    return lm.loc[idx, [f"{name}_x", f"{name}_y"]].to_numpy(float)


def _centres(mask: np.ndarray) -> np.ndarray:
    """``[K, 2]`` (x, y) pixel centres of a mask's pixels."""
    r, c = np.nonzero(mask)
    return np.stack([c + 0.5, r + 0.5], -1)


def _dist(p: np.ndarray, pts: np.ndarray) -> float:
    return float(np.hypot(*(pts - p).T).min())


def _edge(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask."""
    pad = np.pad(mask, 1)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return mask & ~inner


def test_format_inside_and_laterals(ds):
    for size, (root, rec, lm, _) in ds.items():
        assert list(lm.columns) == list(LANDMARK_COLUMNS) and lm.index.equals(rec.index)
        assert len(LANDMARK_COLUMNS) == 2 * len(LANDMARKS) == 20
        fr = _frontal(rec)
        assert set(rec.loc[fr, "view"]) == {"PA", "AP"} and (~fr).sum() >= 3
        assert lm[~fr].isna().all().all()
        v = lm[fr].to_numpy()
        assert np.isfinite(v).all()
        assert (v > 0).all() and (v < size).all()  # every landmark inside the image
        # The convenience accessor gives the table's row.
        row = rec[fr].iloc[0]
        one = landmarks_for(root, row)
        assert list(one) == list(LANDMARKS)
        for name, (x, y) in one.items():
            assert (x, y) == tuple(_pt(lm, row.name, name))
        lat = landmarks_for(root, rec[~fr].iloc[0])
        assert all(np.isnan(x) and np.isnan(y) for x, y in lat.values())


def test_scale_with_image_size(ds):
    (_, rec, a, _), (_, rec64, b, _) = ds[128], ds[64]
    assert rec["image_id"].tolist() == rec64["image_id"].tolist()
    fr = _frontal(rec)
    # Same seed, same poses: the 64 px landmarks are exactly half of the 128 px ones.
    assert np.abs(b[fr].to_numpy() - a[fr].to_numpy() / 2).max() < 1e-6


@pytest.mark.parametrize("size", [128, 64])
def test_apices_and_costophrenic_angles_on_lung_masks(ds, size):
    _, rec, lm, masks = ds[size]
    d_apex, d_cp = [], []
    for idx, row in rec[_frontal(rec)].iterrows():
        m = masks[row["image_id"]]
        carina = _pt(lm, idx, "carina")
        for side, sgn in (("right", -1), ("left", 1)):
            lung = m[f"lung_{side}"]
            # The apex is the middle of the lung's flat top edge; the pose's small rotation
            # can lift one end of that edge by a row, so compare with the top two rows.
            rows = np.flatnonzero(lung.any(axis=1))
            top = np.zeros_like(lung)
            top[rows[0] : rows[0] + 2] = lung[rows[0] : rows[0] + 2]
            apex = _pt(lm, idx, f"apex_{side}")
            d_apex.append(_dist(apex, _centres(top)))
            # (Pixel centres below the edge are lung; a narrow top may hold no centre.)
            assert rows[0] - 1.0 <= apex[1] <= rows[0] + 1.5
            # Patient right is the image left: the right apex lies left of the midline.
            assert sgn * (apex[0] - carina[0]) > 0
            # Costophrenic angle: the lowest, most lateral lung pixel (down and outwards).
            pts = _centres(lung)
            corner = pts[np.argmax(pts[:, 1] + 0.5 * sgn * pts[:, 0])]
            cp = _pt(lm, idx, f"costophrenic_{side}")
            d_cp.append(float(np.hypot(*(cp - corner))))
            assert cp[1] > apex[1] + size / 3
        assert _pt(lm, idx, "apex_right")[0] < _pt(lm, idx, "apex_left")[0]
    d_apex, d_cp = np.array(d_apex), np.array(d_cp)
    print(
        f"{size} px: apex max {d_apex.max():.2f} median {np.median(d_apex):.2f}, "
        f"costophrenic max {d_cp.max():.2f} median {np.median(d_cp):.2f} px"
    )
    assert d_apex.max() <= 2.0, d_apex.max()  # a few px: the apex is a short flat top edge
    assert d_cp.max() <= 2.5, d_cp.max()
    assert np.median(d_apex) <= 1.0 and np.median(d_cp) <= 1.5


@pytest.mark.parametrize("size", [128, 64])
def test_heart_borders_on_heart_mask(ds, size):
    _, rec, lm, masks = ds[size]
    d = []
    for idx, row in rec[_frontal(rec)].iterrows():
        heart = masks[row["image_id"]]["heart"]
        edge = _centres(_edge(heart))
        cols = np.flatnonzero(heart.any(axis=0))
        right, left = _pt(lm, idx, "heart_border_right"), _pt(lm, idx, "heart_border_left")
        d += [_dist(right, edge), _dist(left, edge)]
        assert right[0] < left[0]  # patient right = image left
        # The borders are the heart's extreme columns (the pixel edges around them).
        assert abs(right[0] - cols[0]) <= 1.0 and abs(left[0] - (cols[-1] + 1)) <= 1.0
    print(f"{size} px: heart {max(d):.2f} / {np.median(d):.2f}")
    assert max(d) <= 1.5, max(d)


def _bottoms(x: np.ndarray, y: np.ndarray, px: float) -> tuple[np.ndarray, np.ndarray]:
    """Lowest ``y`` per ``x`` bin of width ``px`` -> (bin centres, bottoms)."""
    b = np.floor(x / px).astype(int)
    keys, inv = np.unique(b, return_inverse=True)
    bottom = np.full(len(keys), -np.inf)
    np.maximum.at(bottom, inv, y)
    return (keys + 0.5) * px, bottom


@pytest.mark.parametrize("size", [128, 64])
def test_diaphragm_carina_and_knob(ds, size):
    root, rec, lm, masks = ds[size]
    d_dome, d_dome_patient, d_knob, bulge = [], [], [], []
    n_clear = 0
    above_heart: list[bool] = []
    for idx, row in rec[_frontal(rec)].iterrows():
        m = masks[row["image_id"]]
        heart = m["heart"]
        heart_top = np.flatnonzero(heart.any(axis=1))[0]
        apex_y = max(_pt(lm, idx, "apex_right")[1], _pt(lm, idx, "apex_left")[1])
        # Patient coordinates of every pixel (the pose may rotate the film a few degrees).
        pose, g = _geometry(root, row)
        cv = render.Canvas(size, pose)
        patient = frontal_landmarks(g)
        hx = cv.x[heart]
        for side in ("right", "left"):
            lung = m[f"lung_{side}"]
            dome = _pt(lm, idx, f"hemidiaphragm_{side}")
            assert dome[1] > apex_y + size / 3
            # Image: where the dome's column is clear of the heart, the lung ends at the dome.
            c = int(dome[0])
            if not heart[:, c].any():
                d_dome.append(abs(np.flatnonzero(lung[:, c])[-1] + 1.0 - dome[1]))
            # Patient frame: lung bottoms lateral to the heart follow the diaphragm, whose
            # highest point is the dome top (and at the dome's x, the bottom is the dome).
            xs, bottom = _bottoms(cv.x[lung], cv.y[lung], cv.px)
            clear = (xs < hx.min() - cv.px) | (xs > hx.max() + cv.px)
            clear &= np.abs(xs) < g.hw - 1.5 * cv.px  # the wall's bin holds only a few pixels
            dx, dy = patient[f"hemidiaphragm_{side}"]
            if clear.any():  # a large heart can reach the chest wall
                assert bottom[clear].min() >= dy - cv.px, (row.image_id, side)
                n_clear += 1
            at = clear & (np.abs(xs - dx) < cv.px)
            if at.any():
                d_dome_patient.append(float(np.abs(bottom[at] - dy).max() / cv.px))
        # Carina: between the lungs (medial lung edges of its row), above the heart.
        car = _pt(lm, idx, "carina")
        r = int(car[1])
        right_edge = np.flatnonzero(m["lung_right"][r])[-1] + 1.0
        left_edge = np.flatnonzero(m["lung_left"][r])[0]
        assert right_edge < car[0] < left_edge
        borders_y = min(_pt(lm, idx, f"heart_border_{s}")[1] for s in ("right", "left"))
        assert apex_y < car[1] < borders_y
        # Aortic knob: patient left of the midline, above the heart's widest points, on the
        # left lung's medial edge ...
        knob = _pt(lm, idx, "aortic_knob")
        assert knob[0] > car[0] and knob[1] < borders_y
        # (An enlarged heart on an AP film can reach above the carina: not in most images.)
        above_heart += [car[1] < heart_top, knob[1] < heart_top]
        d_knob.append(abs(np.flatnonzero(m["lung_left"][int(knob[1])])[0] - knob[0]))
        # ... where that edge bulges out: further out than 0.13 units (~2.6 cm) lower down.
        lx, ly = cv.x[m["lung_left"]], cv.y[m["lung_left"]]
        ky = patient["aortic_knob"][1]
        if not (np.abs(cv.y[heart] - ky - 0.13) < cv.px).any():  # (there: the heart's edge)
            e0 = lx[np.abs(ly - ky) < cv.px].min()
            e1 = lx[np.abs(ly - ky - 0.13) < cv.px].min()
            bulge.append((e0 - e1) / cv.px)  # in pixels
    print(
        f"{size} px: dome |image| max {max(d_dome):.2f} (n={len(d_dome)}), "
        f"|patient| max {max(d_dome_patient):.2f} (n={len(d_dome_patient)}) px, {n_clear} clear; "
        f"knob max {max(d_knob):.2f} median {np.median(d_knob):.2f} px; "
        f"bulge min {min(bulge):.2f} median {np.median(bulge):.2f} px (n={len(bulge)}); "
        f"carina/knob above the heart mask {np.mean(above_heart):.3f}"
    )
    assert len(d_dome) >= 10 and len(d_dome_patient) >= 10 and n_clear >= 60
    assert max(d_dome) <= 1.5 and max(d_dome_patient) <= 1.5
    assert max(d_knob) <= 1.5
    assert len(bulge) >= 40 and min(bulge) >= -1.0 and np.median(bulge) >= size / 128
    assert np.mean(above_heart) >= 0.9


def test_carina_is_the_renderers_trachea_end(ds):
    """The carina height is where render_spine_etc ends the trachea and starts the bronchi."""
    root, rec, _, _ = ds[128]
    pose, g = _geometry(root, rec[_frontal(rec)].iloc[0])
    boxes: list[tuple[float, ...]] = []

    class Recording(render.Canvas):
        def box(self, *b):
            boxes.append(b)
            return super().box(*b)

    render.render_spine_etc(Recording(64, pose), g)
    trachea = [b for b in boxes if b[:3] == (-0.2, 0.2, -1.6)]
    assert len(trachea) == 1
    assert frontal_landmarks(g)["carina"][1] == pytest.approx(trachea[0][3] - 0.15)


def test_fast_for_thousands_of_records(ds, tmp_path):
    root, _, _, _ = ds[64]
    big = tmp_path / "big"
    big.mkdir()
    n = 3000
    info = json.loads((root / "dataset.json").read_text())
    (big / "dataset.json").write_text(json.dumps({**info, "n": n}))
    rec = pd.DataFrame(
        [
            (f"S{t.subject:06d}", f"S{t.subject:06d}_{t.study}", f"I{t.index:07d}", t.view)
            for t in iter_tasks(SEED, n, 64, str(big))
        ],
        columns=["subject_id", "study_id", "image_id", "view"],
    )
    t0 = time.perf_counter()
    lm = landmark_table(big, rec)
    secs = time.perf_counter() - t0
    print(f"{n} records: {secs:.2f} s")
    assert secs < 15.0, secs  # ~1 s on a laptop core; no image is rendered or read
    assert len(lm) == n and lm[rec["view"] != "LATERAL"].notna().all().all()
    # A few poses put an apex or a costophrenic angle off the image: inside_only drops them.
    inside = landmark_table(big, rec, inside_only=True)
    for name in LANDMARKS:
        xy = lm[[f"{name}_x", f"{name}_y"]].to_numpy()
        off = ((xy < 0) | (xy > 64)).any(axis=1)
        kept = inside[[f"{name}_x", f"{name}_y"]].to_numpy()
        assert np.isnan(kept[off]).all() and np.array_equal(kept[~off], xy[~off], equal_nan=True)
        assert off.mean() < 0.05, name
    assert ((lm < 0) | (lm > 64)).any().any()


def test_refuses_other_data(ds, tmp_path):
    root, rec, _, _ = ds[64]
    other = tmp_path / "other"
    other.mkdir()
    info = json.loads((root / "dataset.json").read_text())
    meta = other / "dataset.json"
    meta.write_text(json.dumps({**info, "version": "0.9.0"}))
    with pytest.raises(ValueError, match="regenerate"):
        landmark_table(other, rec)
    meta.write_text(json.dumps({**info, "generator": "hospital PACS export"}))
    with pytest.raises(ValueError, match="not a phantom"):
        landmark_table(other, rec)
    with pytest.raises(ValueError, match="cannot read"):
        landmark_table(tmp_path / "missing", rec)
    meta.write_text(json.dumps({**info, "n": 5}))
    with pytest.raises(ValueError, match="beyond"):
        landmark_table(other, rec)
    meta.write_text(json.dumps(info))
    bad = rec.copy()
    bad.loc[bad.index[0], "subject_id"] = "patient-17"
    with pytest.raises(ValueError, match="not a phantom id"):
        landmark_table(other, bad)
    # Records of this seed do not fit another seed's studies (views differ somewhere).
    meta.write_text(json.dumps({**info, "seed": info["seed"] + 1}))
    with pytest.raises(ValueError, match="do not belong"):
        landmark_table(other, rec)


def test_narrow_apex_and_high_diaphragm(ds):
    """The less common branches: a mediastinum wider than the cavity top (the lung starts
    lower down) and domes so high that the costophrenic angle is where the wall still curves.
    """
    root, rec, _, _ = ds[128]
    pose, g = _geometry(root, rec[_frontal(rec)].iloc[0])
    a = dataclasses.replace(g.anat, med_hw=0.2, dome_right=-0.15, dome_left=-0.12)
    size = 256
    pose = Pose(angle=0.05, scale=1.0, tx=0.0, ty=0.1, inspiration=0.0)
    g = render.frontal_geometry(a, pose, "PA")
    assert g.hw_at(g.y_apex) < g.anat.med_hw  # both branches are taken
    assert g.hw_at(g.dome[-1] + 0.36 * 0.58**2) < g.hw
    masks = render.empty_masks(size)
    cv = render.Canvas(size, pose)
    render.render_lungs(cv, g, render.get_textures(size), {}, masks)
    patient = frontal_landmarks(g)
    for side, sgn in (("right", -1), ("left", 1)):
        lung = masks[f"lung_{side}"]
        pts = _centres(lung)
        ax, ay = to_pixels(pose, size, *patient[f"apex_{side}"])
        rows = np.flatnonzero(lung.any(axis=1))
        # (A cusp: the first pixel centres fall inside once the wedge is a pixel wide.)
        assert _dist(np.array([ax, ay]), pts) <= 2.0 and rows[0] - 1.5 <= ay <= rows[0] + 1.5
        # Below the cavity top, where the lung's width is zero.
        py = patient[f"apex_{side}"][1]
        m = float(g.med_of(np.array([py]), sgn)[0])
        assert py > g.y_apex + 0.005 and abs(g.hw_at(py) - m) < 1e-6
        cx, cy = to_pixels(pose, size, *patient[f"costophrenic_{side}"])
        corner = pts[np.argmax(pts[:, 1] + 0.5 * sgn * pts[:, 0])]
        assert np.hypot(cx - corner[0], cy - corner[1]) <= 2.0
        assert abs(patient[f"costophrenic_{side}"][0]) < g.hw - 0.005  # not the full width
