"""BRAX adapter on a small fake tree with the published header (PNGs, one DICOM-only row)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dicom_fixtures import PHI, make_dicom
from test_adapters import assert_no_phi, assert_subject_level, tree_text, write_csv

from raddino_lib.data.adapters import AdapterError, adapter_name, brax, get_adapter
from raddino_lib.data.records import load_image, load_records

LABELS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
]  # fmt: skip
# master_spreadsheet_update.csv of BRAX 1.1.0: paths, patient and study, the 14 labels,
# then the view and image fields (the data descriptor's columns)
HEADER = [
    "DicomPath", "PngPath", "PatientID", "PatientSex", "PatientAge", "AccessionNumber",
    "StudyDate", *LABELS, "ViewPosition", "Rows", "Columns", "Manufacturer",
]  # fmt: skip


def _png(root, rel, value=120):
    from PIL import Image

    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 6), value, np.uint8)).save(p)


def brax_tree(root, *, n=12):
    """``n`` subjects with a PA image and a lateral; subject 0 also has an oblique view
    (dropped) and a second study whose image exists only as a MONOCHROME1 DICOM."""
    rows = []

    def row(sid, acc, img, view, age="55", sex="F", dicom_only=False, **labels):
        dcm = f"images/{sid}/{acc}/{img}.dcm"
        png = f"images/{sid}/{acc}/{img}.png"
        if dicom_only:
            make_dicom(root / dcm, np.full((8, 6), 200, np.uint8), pi="MONOCHROME1")
            png = ""
        else:
            _png(root, png)
        vals = [labels.get(c, "") for c in LABELS]
        rows.append([dcm, png, sid, sex, age, acc, PHI[3], *vals, view, "8", "6", "3"])

    for i in range(n):
        sid = f"id{i:03d}"
        row(sid, f"acc{i}a", "i0", "PA", age="85 or more" if i == 1 else "55",
            sex="M" if i % 2 else "F", **{"Cardiomegaly": "1", "Pneumonia": "-1"})  # fmt: skip
        row(sid, f"acc{i}a", "i1", "LL", **{"No Finding": "1"})
    row("id000", "acc0a", "i2", "RLO")  # an oblique view: dropped
    row("id000", "acc0b", "i3", "AP", age="", sex="O", dicom_only=True, **{"Pneumothorax": "1"})
    write_csv(root / "master_spreadsheet_update.csv", HEADER, rows)
    return root


def test_brax_records_views_labels_ages(tmp_path):
    src = brax_tree(tmp_path / "brax")
    df = brax.build_records(src, seed=0)
    assert_subject_level(df)
    assert len(df) == 25 and df.attrs["dropped_views"] == 1 and df.attrs["skipped"] == 0
    assert set(df["cohort"]) == {"brax"} and set(df["split"]) == {"train", "val", "test"}
    r = df.set_index("image_id")
    pa, lat = r.loc["images/id003/acc3a/i0"], r.loc["images/id003/acc3a/i1"]
    assert pa["view"] == "PA" and lat["view"] == "LATERAL" and pa["study_id"] == "id003/acc3a"
    assert pa["cardiomegaly"] == 1 and pd.isna(pa["pneumonia"])  # U-Ignore
    assert pa["pneumothorax"] == 0  # unmentioned -> 0
    assert pd.isna(pa["aortic_enlargement"])  # not a BRAX label
    assert lat["no_finding"] == 1 and pa["sex"] == "M" and pa["age"] == 55
    assert r.loc["images/id001/acc1a/i0", "age"] == 85
    dcm = r.loc["images/id000/acc0b/i3"]
    assert dcm["path"].endswith(".dcm") and dcm["view"] == "AP" and dcm["pneumothorax"] == 1
    assert dcm["sex"] == "" and pd.isna(dcm["age"])
    ones = brax.build_records(src, uncertain="ones").set_index("image_id")
    assert ones.loc["images/id003/acc3a/i0", "pneumonia"] == 1
    assert brax.parse_age("40-44") == 40 and np.isnan(brax.parse_age("unknown"))
    # the DICOM-only image reads through the DICOM reader: MONOCHROME1 inverted
    out = tmp_path / "out"
    brax.write_dataset(src, out)
    rec = load_records(out).set_index("image_id")
    img = load_image(out, rec.loc["images/id000/acc0b/i3", "path"])
    assert img.max() < 0.3  # 200 of 255 in MONOCHROME1 is dark once inverted
    assert_no_phi(df.to_csv(index=False), tree_text(out))


def test_brax_errors(tmp_path):
    src = brax_tree(tmp_path / "b")
    t = src / "master_spreadsheet_update.csv"
    raw = pd.read_csv(t, dtype=str, keep_default_na=False)
    bad = raw.copy()
    bad.loc[2, "Cardiomegaly"] = "yes"
    bad.to_csv(t, index=False)
    with pytest.raises(AdapterError, match=r"row 4, column 'Cardiomegaly': label 'yes'"):
        brax.build_records(src)
    miss = raw.copy()
    miss.loc[0, "PngPath"] = "images/nowhere.png"
    miss.to_csv(t, index=False)
    with pytest.raises(AdapterError, match="has no file"):
        brax.build_records(src)
    assert brax.build_records(src, skip_bad=True).attrs["skipped"] == 1
    raw.drop(columns=["ViewPosition"]).to_csv(t, index=False)
    with pytest.raises(AdapterError, match=r"missing columns \['ViewPosition'\]"):
        brax.build_records(src)
    t.unlink()
    with pytest.raises(AdapterError, match="master_spreadsheet_update.csv: expected table"):
        brax.build_records(src)
    assert adapter_name("BRAX") == "brax" and get_adapter("brax") is brax
