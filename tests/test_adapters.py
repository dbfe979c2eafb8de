"""Dataset adapters on small fake trees: records, labels, splits, masks, errors, no PHI."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
from dicom_fixtures import PHI
from dicom_fixtures import make_dicom as _make_dicom
from PIL import Image

from raddino_lib.data import schema
from raddino_lib.data.adapters import (
    ADAPTERS,
    AdapterError,
    candid_ptx,
    chexpert,
    get_adapter,
    rsna_pneumonia,
    split_subjects,
    vindr_cxr,
)
from raddino_lib.data.io import read_masks
from raddino_lib.data.readers import ImageReadError, read_dicom_header, read_image
from raddino_lib.data.records import load_image, load_records

VINDR_HEADER = [
    "image_id", "rad_id", "Aortic enlargement", "Atelectasis", "Calcification",
    "Cardiomegaly", "Clavicle fracture", "Consolidation", "Edema", "Emphysema", "Enlarged PA",
    "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst", "Mediastinal shift",
    "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD", "Lung tumor", "Pneumonia",
    "Tuberculosis", "Other diseases", "No finding",
]  # fmt: skip
CHEXPERT_HEADER = [
    "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding",
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
]  # fmt: skip


def make_dicom(path, *, pid="PHI-12345", view="PA", value=100):
    """A tiny 8-bit DX DICOM with planted patient identifiers."""
    return _make_dicom(path, np.full((4, 4), value, np.uint8), pid=pid, view=view)


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def tree_text(root) -> str:
    """Every regular file under root (not following the source symlink) as latin-1 text."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not any(q.is_symlink() for q in [p, *p.parents] if q != root.parent):
            out.append(p.read_bytes().decode("latin-1"))
    return "\n".join(out)


def assert_no_phi(*texts):
    for t in texts:
        for s in PHI:
            assert s not in t, f"{s!r} leaked"


def assert_subject_level(df):
    assert tuple(df.columns) == schema.RECORD_COLUMNS
    assert (df.groupby("subject_id")["split"].nunique() == 1).all()
    assert set(df["split"]) <= set(schema.SPLITS)
    assert set(df["view"]) <= set(schema.VIEWS)
    for f in schema.FINDINGS:
        assert set(df[f].dropna().unique().tolist()) <= {0, 1}


# ----------------------------------------------------------------------------- VinDr


def vindr_tree(root, n_train=8):
    def lab(**on):
        return [int(on.get(c, 0)) for c in VINDR_HEADER[2:]]

    rows = []
    for i in range(n_train):
        iid = f"tr{i:03d}"
        if i == 0:  # cardiomegaly 2 of 3, lung opacity 1 of 3
            rows += [
                [iid, "R1", *lab(Cardiomegaly=1, **{"Lung Opacity": 1})],
                [iid, "R2", *lab(Cardiomegaly=1)],
                [iid, "R3", *lab(**{"No finding": 1})],
            ]
        else:
            rows += [[iid, f"R{r}", *lab(**{"No finding": 1})] for r in (1, 2, 3)]
        make_dicom(root / "train" / f"{iid}.dicom")
    write_csv(root / "annotations" / "image_labels_train.csv", VINDR_HEADER, rows)
    test = [["te000", "R8", *lab(Tuberculosis=1)], ["te001", "R9", *lab(**{"No finding": 1})]]
    write_csv(root / "annotations" / "image_labels_test.csv", VINDR_HEADER, test)
    make_dicom(root / "test" / "te000.dicom", view="AP")
    make_dicom(root / "test" / "te001.dicom")
    return root


def test_vindr_majority_labels_splits_and_roundtrip(tmp_path):
    src = vindr_tree(tmp_path / "vindr")
    df = vindr_cxr.build_records(src, seed=0)
    assert_subject_level(df)
    assert len(df) == 10 and df.attrs["skipped"] == 0
    r = df.set_index("image_id")
    assert r.loc["tr000", "cardiomegaly"] == 1  # 2 of 3 readers
    assert r.loc["tr000", "lung_opacity"] == 0  # 1 of 3
    assert r.loc["tr000", "no_finding"] == 0
    assert r.loc["tr001", "no_finding"] == 1
    assert r.loc["te000", "tuberculosis"] == 1 and r.loc["te000", "split"] == "test"
    assert r.loc["te000", "view"] == "AP" and r.loc["te001", "view"] == "PA"
    assert pd.isna(r.loc["tr000", "chest_tube"])  # not a VinDr label
    assert set(df.loc[df["image_id"].str.startswith("tr"), "split"]) <= {"train", "val"}
    assert (r["sex"] == "F").all() and (r["age"] == 45).all()
    anyr = vindr_cxr.build_records(src, rule="any").set_index("image_id")
    assert anyr.loc["tr000", "lung_opacity"] == 1
    # Deterministic for a seed.
    pd.testing.assert_frame_equal(df, vindr_cxr.build_records(src, seed=0))
    out = tmp_path / "out"
    vindr_cxr.write_dataset(src, out)
    back = load_records(out, allow_unknown_labels=True)
    assert list(back["image_id"]) == list(df["image_id"])
    assert back["path"].iloc[0].startswith("source/")
    assert read_image(out / back["path"].iloc[0]).shape == (4, 4)


def test_vindr_bad_label_and_missing_file(tmp_path):
    src = vindr_tree(tmp_path / "vindr", n_train=3)
    table = src / "annotations" / "image_labels_train.csv"
    text = table.read_text().splitlines()
    fields = text[4].split(",")
    fields[5] = "2"  # Cardiomegaly of the 4th data row (CSV line 5)
    text[4] = ",".join(fields)
    table.write_text("\n".join(text) + "\n")
    with pytest.raises(
        AdapterError, match=r"image_labels_train\.csv: row 5, column 'Cardiomegaly'"
    ):
        vindr_cxr.build_records(src)
    src = vindr_tree(tmp_path / "vindr2", n_train=3)
    (src / "train" / "tr001.dicom").unlink()
    with pytest.raises(AdapterError, match=r"'tr001'.*tr001\.dicom") as e:
        vindr_cxr.build_records(src)
    assert_no_phi(str(e.value))
    df = vindr_cxr.build_records(src, skip_bad=True)
    assert df.attrs["skipped"] == 1 and "tr001" not in set(df["image_id"])


# ------------------------------------------------------------------------------ RSNA


def rsna_tree(root):
    rows = [
        ["p-a", "10", "20", "30", "40", "1"],
        ["p-a", "50", "20", "30", "40", "1"],  # second box of the same image
        ["p-b", "", "", "", "", "0"],
        ["p-c", "", "", "", "", "0"],
    ] + [[f"p-{i}", "", "", "", "", "0"] for i in range(10)]
    write_csv(
        root / "stage_2_train_labels.csv",
        ["patientId", "x", "y", "width", "height", "Target"],
        rows,
    )
    info = [["p-a", "Lung Opacity"], ["p-b", "Normal"], ["p-c", "No Lung Opacity / Not Normal"]]
    write_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], info)
    for pid in sorted({r[0] for r in rows}):
        make_dicom(
            root / "stage_2_train_images" / f"{pid}.dcm", view="AP" if pid == "p-a" else "PA"
        )
    return root


def test_rsna_one_row_per_image(tmp_path):
    src = rsna_tree(tmp_path / "rsna")
    df = rsna_pneumonia.build_records(src, seed=3)
    assert_subject_level(df)
    assert len(df) == 13
    r = df.set_index("image_id")
    assert r.loc["p-a", "pneumonia"] == 1 and r.loc["p-b", "pneumonia"] == 0
    assert r.loc["p-b", "no_finding"] == 1 and r.loc["p-c", "no_finding"] == 0
    assert pd.isna(r.loc["p-0", "no_finding"]) and pd.isna(r.loc["p-a", "cardiomegaly"])
    assert r.loc["p-a", "view"] == "AP" and r.loc["p-b", "path"] == "stage_2_train_images/p-b.dcm"
    assert set(df["split"]) == {"train", "val", "test"}
    out = tmp_path / "out"
    rsna_pneumonia.write_dataset(src, out, link="absolute")
    back = load_records(out, allow_unknown_labels=True)
    assert back["path"].iloc[0].startswith(str(src.resolve()))


def test_rsna_bad_target(tmp_path):
    src = rsna_tree(tmp_path / "rsna")
    t = src / "stage_2_train_labels.csv"
    t.write_text(t.read_text().replace("p-c,,,,,0", "p-c,,,,,yes"))
    with pytest.raises(AdapterError, match=r"stage_2_train_labels\.csv: row 5, column 'Target'"):
        rsna_pneumonia.build_records(src)


# ------------------------------------------------------------------------- CANDID-PTX


def candid_tree(root):
    ptx = np.zeros((1024, 1024), bool)
    ptx[100:110, 200:205] = True
    tube = np.zeros((1024, 1024), bool)
    tube[500:600, 10] = True
    rep = [
        ["1.2.3.1", "9.1", candid_ptx.rle_encode(ptx), "small left apical pneumothorax"],
        ["1.2.3.2", "9.2", "-1", "no pneumothorax"],
        ["1.2.3.3", "9.3", "-1", "normal"],
    ] + [[f"1.2.3.{i}", f"9.{i}", "-1", "normal"] for i in range(4, 12)]
    write_csv(
        root / "Pneumothorax_reports.csv",
        ["SOPInstanceUID", "StudyInstanceUID", "EncodedPixels", "Report"],
        rep,
    )
    write_csv(
        root / "chest_tube.csv",
        ["anon_SOPUID", "mask_rle"],
        [["1.2.3.1", candid_ptx.rle_encode(tube)], ["1.2.3.2", "-1"]],
    )
    write_csv(root / "acute_rib_fracture.csv", ["anon_SOPUID", "mask_rle"], [["1.2.3.3", "5 3"]])
    for i in range(1, 12):
        # Images 1 and 2 belong to the same patient (different studies).
        pid = "PHI-12345" if i in (1, 2) else f"PHI-12345-{i}"
        make_dicom(root / "images" / f"1.2.3.{i}.dcm", pid=pid)
    return root, ptx, tube


def test_rle_is_column_major_and_relative():
    m = candid_ptx.rle_decode("5 3 1020 2", (1024, 1024))
    assert m[5:8, 0].all() and m.sum() == 5
    assert m[4:6, 1].all()  # 8 + 1020 = 1028 = column 1, row 4
    assert candid_ptx.rle_encode(m) == "5 3 1020 2"
    with pytest.raises(AdapterError, match="past"):
        candid_ptx.rle_decode("1048570 10")


def test_candid_labels_masks_and_patient_grouping(tmp_path):
    src, ptx, tube = candid_tree(tmp_path / "candid")
    out = tmp_path / "out"
    df = candid_ptx.write_dataset(src, out, seed=1)
    assert_subject_level(df)
    r = df.set_index("image_id")
    assert r.loc["1.2.3.1", "pneumothorax"] == 1 and r.loc["1.2.3.2", "pneumothorax"] == 0
    assert r.loc["1.2.3.1", "chest_tube"] == 1 and r.loc["1.2.3.5", "chest_tube"] == 0
    assert r.loc["1.2.3.3", "rib_fracture"] == 1 and r.loc["1.2.3.1", "rib_fracture"] == 0
    assert r.loc["1.2.3.1", "subject_id"] == r.loc["1.2.3.2", "subject_id"]
    assert r.loc["1.2.3.1", "study_id"] != r.loc["1.2.3.2", "study_id"]
    assert df["subject_id"].nunique() == 10
    assert r.loc["1.2.3.1", "path"] == "images/1.2.3.1.dcm"
    back = load_records(out, allow_unknown_labels=True)
    masks = read_masks(out / back.set_index("image_id").loc["1.2.3.1", "mask_path"])
    np.testing.assert_array_equal(masks["pneumothorax"], ptx)
    np.testing.assert_array_equal(masks["chest_tube"], tube)
    neg = read_masks(out / r.loc["1.2.3.2", "mask_path"])
    assert not neg["pneumothorax"].any()


def test_candid_bad_rle(tmp_path):
    src, _, _ = candid_tree(tmp_path / "candid")
    t = src / "chest_tube.csv"
    t.write_text(t.read_text().replace("1.2.3.2,-1", "1.2.3.2,maybe"))
    with pytest.raises(AdapterError, match=r"chest_tube\.csv: row 3"):
        candid_ptx.build_records(src)


# --------------------------------------------------------------------------- CheXpert


def chexpert_tree(root, *, overlap=False):
    def img(rel):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 6), 90, np.uint8)).save(p)

    def row(rel, fl="Frontal", appa="AP", **labels):
        vals = [labels.get(c, "") for c in CHEXPERT_HEADER[5:]]
        img(rel)
        return [f"CheXpert-v1.0-small/{rel}", "Female", "63", fl, appa, *vals]

    train = []
    for p in range(1, 9):
        train.append(
            row(
                f"train/patient{p:05d}/study1/view1_frontal.jpg",
                **{"Cardiomegaly": "1.0", "Pneumonia": "-1.0", "No Finding": ""},
            )
        )
        train.append(row(f"train/patient{p:05d}/study1/view2_lateral.jpg", fl="Lateral", appa=""))
    train.append(
        row("train/patient00009/study2/view1_frontal.jpg", appa="", **{"No Finding": "1.0"})
    )
    vp = 1 if overlap else 64541
    valid = [
        row(
            f"valid/patient{vp:05d}/study1/view1_frontal.jpg",
            appa="PA",
            **{c: "0.0" for c in CHEXPERT_HEADER[5:]},
        )
    ]
    write_csv(root / "train.csv", CHEXPERT_HEADER, train)
    write_csv(root / "valid.csv", CHEXPERT_HEADER, valid)
    return root


def test_chexpert_labels_views_and_splits(tmp_path):
    src = chexpert_tree(tmp_path / "CheXpert-v1.0-small")
    df = chexpert.build_records(src, seed=0)
    assert_subject_level(df)
    r = df.set_index("image_id")
    f = "train/patient00001/study1/view1_frontal"
    assert r.loc[f, "cardiomegaly"] == 1
    assert pd.isna(r.loc[f, "pneumonia"])  # -1 -> blank (U-Ignore)
    assert r.loc[f, "lung_opacity"] == 0  # not mentioned -> 0
    assert pd.isna(r.loc[f, "tuberculosis"])  # not a CheXpert label
    assert r.loc[f, "path"] == "train/patient00001/study1/view1_frontal.jpg"
    assert r.loc["train/patient00001/study1/view2_lateral", "view"] == "LATERAL"
    assert r.loc["train/patient00009/study2/view1_frontal", "view"] == "AP"
    assert df.attrs["view_defaulted"] == 1
    assert r.loc["valid/patient64541/study1/view1_frontal", "split"] == "test"
    assert (r["sex"] == "F").all() and (r["age"] == 63).all()
    ones = chexpert.build_records(src, uncertain="ones").set_index("image_id")
    assert ones.loc[f, "pneumonia"] == 1
    out = tmp_path / "out"
    chexpert.write_dataset(src, out)
    back = load_records(out, allow_unknown_labels=True)
    assert load_image(out, back.iloc[0]).shape == (8, 6)


def test_chexpert_errors(tmp_path):
    src = chexpert_tree(tmp_path / "a", overlap=True)
    with pytest.raises(AdapterError, match=r"subject 'patient00001' appears in several splits"):
        chexpert.build_records(src)
    src = chexpert_tree(tmp_path / "b")
    t = src / "train.csv"
    t.write_text(t.read_text().replace("-1.0", "-2", 1))
    with pytest.raises(AdapterError, match=r"train\.csv: row 2, column 'Pneumonia'"):
        chexpert.build_records(src)


# ------------------------------------------------------------------------ shared bits


def test_split_subjects_deterministic_and_disjoint():
    subs = [f"s{i}" for i in range(100)]
    a = split_subjects(subs, seed=5)
    assert a == split_subjects(list(reversed(subs)) + subs[:10], seed=5)
    counts = pd.Series(a).value_counts()
    assert (counts["train"], counts["val"], counts["test"]) == (70, 15, 15)
    assert a != split_subjects(subs, seed=6)


def test_registry():
    assert {"vindr_cxr", "rsna_pneumonia", "candid_ptx", "chexpert"} <= set(ADAPTERS)
    assert get_adapter("chexpert") is chexpert
    with pytest.raises(KeyError):
        get_adapter("openi")


def test_no_phi_anywhere_in_outputs(tmp_path):
    texts = []
    cases = [
        (vindr_cxr, vindr_tree(tmp_path / "vindr")),
        (rsna_pneumonia, rsna_tree(tmp_path / "rsna")),
        (candid_ptx, candid_tree(tmp_path / "candid")[0]),
    ]
    for mod, src in cases:
        out = tmp_path / f"out_{mod.__name__.rsplit('.', 1)[-1]}"
        df = mod.write_dataset(src, out)
        texts += [df.to_csv(index=False), repr(df.attrs), tree_text(out)]
        texts.append(repr(read_dicom_header(src / df["path"].iloc[0], demographics=True)))
        # Errors: a missing image and an undecodable DICOM.
        victim = src / df["path"].iloc[0]
        data = victim.read_bytes()
        victim.unlink()
        with pytest.raises(AdapterError) as e:
            mod.build_records(src)
        texts.append(str(e.value))
        victim.write_bytes(data[:-8])
        with pytest.raises(ImageReadError) as e:
            read_image(victim)
        texts.append(str(e.value))
    assert any("candid" in t for t in texts)  # the outputs were really collected
    assert_no_phi(*texts)
