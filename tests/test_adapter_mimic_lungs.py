"""The MIMIC-CXR lung-mask + Chest ImaGenome adapter on a fake tree: left/right lungs split by
side, zones as lung-inside-box (hand-computed), the subset-only read, splits, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from dicom_fixtures import PHI
from PIL import Image
from test_adapters import assert_no_phi, tree_text
from test_adapters_extra import mimic_tree

from raddino_lib.data import schema
from raddino_lib.data.adapters import AdapterError, adapter_name, get_adapter, mimic_lungs
from raddino_lib.data.records import load_masks, load_records

H, W = 48, 40
RIGHT_COLS, LEFT_COLS, ROWS = (4, 16), (24, 36), (8, 40)  # image-left block = patient's right
# ImaGenome boxes (x1, y1, x2, y2): thirds of the lung rows, each side's box wider than its lung
ZONE_ROWS = {"upper": (8, 18), "mid": (18, 29), "lower": (29, 40)}
SIDE_COLS = {"right": (2, 20), "left": (22, 38)}


def lung_image(value=255, touching=False):
    a = np.zeros((H, W), np.uint8)
    a[ROWS[0] : ROWS[1], RIGHT_COLS[0] : RIGHT_COLS[1]] = value
    a[ROWS[0] : ROWS[1], LEFT_COLS[0] : LEFT_COLS[1]] = value
    if touching:  # a thin bridge joins the lungs into one component
        a[20:22, RIGHT_COLS[1] : LEFT_COLS[0]] = value
    return a


def scene_graph(did, zones=("upper", "mid", "lower"), pid=PHI[1]):
    objects = [{"object_id": f"{did}_trachea", "bbox_name": "trachea", "original_x1": 18,
                "original_y1": 0, "original_x2": 22, "original_y2": 10}]  # fmt: skip
    for side, (x1, x2) in SIDE_COLS.items():
        for z in zones:
            y1, y2 = ZONE_ROWS[z]
            objects.append({"object_id": f"{did}_{side} {z} lung zone",
                            "bbox_name": f"{side} {z} lung zone", "x1": 0, "y1": 0, "x2": 1,
                            "y2": 1, "original_x1": x1, "original_y1": y1, "original_x2": x2,
                            "original_y2": y2})  # fmt: skip
    return {"image_id": did, "patient_id": pid, "study_id": "s1", "objects": objects}


def lungs_tree(root, *, imagenome=True):
    """mimic_tree with 48 x 40 frontal JPEGs, a lung mask for every frontal image but one
    (naming, size and encoding varied) and a scene graph for each (one lacks the lower zones)."""
    src = mimic_tree(root)
    split = pd.read_csv(src / "mimic-cxr-2.0.0-split.csv.gz", dtype=str)
    meta = pd.read_csv(src / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str)
    view = dict(zip(meta["dicom_id"], meta["ViewPosition"], strict=True))
    masks, graphs = src / "lung-segment-mimic-cxr", src / "chest-imagenome" / "scene_graph"
    masks.mkdir()
    graphs.mkdir(parents=True)
    frontal = [r for r in split.to_dict("records") if view[r["dicom_id"]] in ("PA", "AP")]
    for i, r in enumerate(frontal):
        did, sid, st = r["dicom_id"], r["subject_id"], r["study_id"]
        jpg = src / f"files/p{sid[:2]}/p{sid}/s{st}/{did}.jpg"
        Image.fromarray(np.full((H, W), 100, np.uint8)).save(jpg)
        if i == 0:
            continue  # an image without a lung mask: not in the dataset
        if i == 1:  # the "segmented image": lung pixels keep grey values, the rest is black
            a = lung_image(1) * np.linspace(40, 200, W, dtype=np.float32)[None, :]
            Image.fromarray(a.astype(np.uint8)).save(masks / f"{did}.png")
        elif i == 2:  # twice the image's size, another file-name suffix, in a subfolder
            big = np.kron(lung_image(), np.ones((2, 2), np.uint8))
            (masks / "sub").mkdir(exist_ok=True)
            Image.fromarray(big).save(masks / "sub" / f"{did}_mask.png")
        elif i == 3:
            Image.fromarray(lung_image(touching=True)).save(masks / f"{did}.png")
        else:
            Image.fromarray(lung_image()).save(masks / f"{did}.png")
        zones = ("upper", "mid") if i == 4 else ("upper", "mid", "lower")
        (graphs / f"{did}_SceneGraph.json").write_text(json.dumps(scene_graph(did, zones)))
    if not imagenome:
        import shutil

        shutil.rmtree(src / "chest-imagenome")
    return src, [r["dicom_id"] for r in frontal]


def expected_masks(touching=False):
    lung = lung_image(touching=touching) > 0
    xx = np.arange(W)[None, :]
    cut = 20 if not touching else None
    right = lung & (xx < (cut or 20))
    left = lung & (xx >= (cut or 20))
    out = {"lung_right": right, "lung_left": left}
    yy = np.arange(H)[:, None]
    for side, (x1, x2) in SIDE_COLS.items():
        for z, (y1, y2) in ZONE_ROWS.items():
            box = (yy >= y1) & (yy < y2) & (xx >= x1) & (xx < x2)
            out[f"zone_{side}_{z}"] = box & (right if side == "right" else left)
    return out


def test_split_lungs_two_components_and_touching():
    right, left = mimic_lungs.split_lungs(lung_image() > 0)
    exp = expected_masks()
    assert np.array_equal(right, exp["lung_right"]) and np.array_equal(left, exp["lung_left"])
    # joined by a bridge: cut at the column with fewest lung pixels in the middle 60%
    right, left = mimic_lungs.split_lungs(lung_image(touching=True) > 0)
    assert not (right & left).any() and ((right | left) == (lung_image(touching=True) > 0)).all()
    assert right[:, :16].sum() == exp["lung_right"].sum() and not right[:, 24:].any()
    assert left[:, 24:].sum() == exp["lung_left"].sum()
    # a speck beside the right lung goes to the right lung
    m = lung_image() > 0
    m[2, 1] = True
    right, left = mimic_lungs.split_lungs(m)
    assert right[2, 1] and not left[2, 1]


def test_zone_masks_hand_computed():
    right, left = mimic_lungs.split_lungs(lung_image() > 0)
    boxes = {"zone_right_upper": (2.0, 8.0, 20.0, 18.0), "zone_left_lower": (30.0, 35.0, 99, 99)}
    z = mimic_lungs.zone_masks(right, left, boxes)
    assert z["zone_right_upper"].sum() == 10 * 12  # rows 8..17, lung cols 4..15
    assert z["zone_left_lower"].sum() == (40 - 35) * (36 - 30)  # box clipped to the image
    assert not (z["zone_right_upper"] & left).any()


def test_records_masks_and_splits(tmp_path):
    src, frontal = lungs_tree(tmp_path / "mimic")
    out = tmp_path / "out"
    df = mimic_lungs.write_dataset(src, out, mimic_iv_dir=src / "mimic-iv")
    assert list(df.columns) == list(schema.RECORD_COLUMNS)
    # the first frontal image has no mask, the fifth lacks the lower-zone boxes
    assert sorted(df["image_id"]) == sorted(frontal[1:4] + frontal[5:])
    assert df.attrs["no_zone_boxes"] == 1
    assert set(df["view"]) <= {"PA", "AP"} and set(df["cohort"]) == {"mimic_cxr"}
    assert set(df["split"]) <= set(schema.SPLITS)
    assert df.groupby("subject_id")["split"].nunique().max() == 1
    assert df["sex"].notna().all()  # MIMIC-IV joined as by the MIMIC-CXR adapter
    recs = load_records(out)
    exp, exp_touch = expected_masks(), None
    for _, row in recs.iterrows():
        m = load_masks(out, row)
        assert set(m) == set(schema.LUNG_MASKS + schema.ZONE_MASKS)
        assert all(v.shape == (H, W) for v in m.values())
        if row["image_id"] == frontal[3]:  # touching lungs: the bridge is cut in two
            exp_touch = m
            continue
        for k, v in exp.items():
            assert np.array_equal(m[k], v), (row["image_id"], k)
    assert exp_touch is not None
    assert not (exp_touch["lung_right"] & exp_touch["lung_left"]).any()
    for side in ("right", "left"):  # the zones tile each lung (the boxes cover its rows)
        union = np.logical_or.reduce([exp[f"zone_{side}_{z}"] for z in ZONE_ROWS])
        assert np.array_equal(union, exp[f"lung_{side}"])


def test_subset_only_read_and_no_imagenome(tmp_path):
    """Images of MIMIC-CXR without a mask may be absent from disk; without ImaGenome only the
    two lung masks are written."""
    src, frontal = lungs_tree(tmp_path / "mimic", imagenome=False)
    for p in (src / "files").rglob("*.jpg"):
        if p.stem not in frontal[1:]:
            p.unlink()  # laterals and the unmasked image were never downloaded
    df = mimic_lungs.write_dataset(src, tmp_path / "out")
    assert len(df) == len(frontal) - 1 and df.attrs["no_zone_boxes"] == 0
    m = load_masks(tmp_path / "out", load_records(tmp_path / "out").iloc[0])
    assert set(m) == set(schema.LUNG_MASKS)


def test_bad_input(tmp_path):
    src, frontal = lungs_tree(tmp_path / "mimic")
    masks = src / "lung-segment-mimic-cxr"
    Image.fromarray(lung_image()).save(masks / f"{frontal[5]}_lung.png")  # a second file
    with pytest.raises(AdapterError, match=rf"image '{frontal[5]}' has 2 mask files"):
        mimic_lungs.build_records(src)
    (masks / f"{frontal[5]}_lung.png").unlink()
    Image.fromarray(np.zeros((H, W), np.uint8)).save(masks / f"{frontal[6]}.png")
    with pytest.raises(AdapterError, match=rf"{frontal[6]}\.png: the lung mask is empty"):
        mimic_lungs.write_dataset(src, tmp_path / "o1")
    Image.fromarray(lung_image()).save(masks / f"{frontal[6]}.png")
    graph = src / "chest-imagenome" / "scene_graph" / f"{frontal[7]}_SceneGraph.json"
    graph.write_text("{not json")
    with pytest.raises(AdapterError, match=r"SceneGraph\.json: not a Chest ImaGenome scene"):
        mimic_lungs.build_records(src)
    with pytest.raises(AdapterError, match=r"lung-mask folder not found"):
        mimic_lungs.build_records(src, masks_dir=tmp_path / "nowhere")
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(lung_image()).save(other / "lungs_0001.png")
    with pytest.raises(AdapterError, match=r"no mask file named after a MIMIC-CXR dicom_id.*"
                                           r"lungs_0001\.png"):  # fmt: skip
        mimic_lungs.build_records(src, masks_dir=other)


def test_registry_no_phi_and_chapter_folder(tmp_path, monkeypatch):
    """Found by its aliases; the data_root convention (masks and ImaGenome inside the
    MIMIC-CXR folder) builds a cached folder whose masks the segmentation loader reads; the
    PHI planted in the report headers and scene graphs reaches no output."""
    from raddino_lib.data.datasets import adapter_dataset
    from raddino_lib.seg.data import load_mask_stack, seg_records

    assert adapter_name("lung-segment-mimic-cxr") == "mimic_lungs"
    assert get_adapter("mimic-lungs") is mimic_lungs
    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path / "cache"))
    src, frontal = lungs_tree(tmp_path / "mimic")
    root = adapter_dataset("mimic_lungs", src, progress=False)
    df = seg_records(load_records(root))
    assert len(df) == len(frontal) - 2 and set(df["seg_split"]) <= {"train", "val", "test"}
    stack = load_mask_stack(root, df.iloc[0], schema.ZONE_MASKS, 24)
    assert stack.shape == (6, 24, 24) and stack.any(axis=(1, 2)).all()
    assert_no_phi(tree_text(root), load_records(root).to_csv(index=False))
