"""MIMIC-CXR-JPG, NIH ChestX-ray14, PadChest and VinDr-RibCXR adapters on small fake trees
(real header rows), and a no-PHI check over all nine adapters' outputs and logs."""

from __future__ import annotations

import gzip
import json
import logging

import numpy as np
import pandas as pd
import pytest
from dicom_fixtures import PHI
from PIL import Image
from test_adapter_brax import brax_tree
from test_adapters import (
    assert_no_phi,
    assert_subject_level,
    candid_tree,
    chexpert_tree,
    rsna_tree,
    tree_text,
    vindr_tree,
    write_csv,
)

from raddino_lib.data import schema
from raddino_lib.data.adapters import (
    ADAPTERS,
    AdapterError,
    adapter_name,
    get_adapter,
    mimic_cxr,
    nih_cxr14,
    padchest,
    vindr_ribcxr,
)
from raddino_lib.data.io import float_to_uint16, write_png
from raddino_lib.data.records import load_image, load_masks, load_records

# Real header rows (PhysioNet MIMIC-CXR-JPG 2.0.0, MIMIC-IV 2.2 hosp, NIH, PadChest).
MIMIC_SPLIT_HEADER = ["dicom_id", "study_id", "subject_id", "split"]
MIMIC_CHEXPERT_HEADER = [
    "subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
    "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity", "No Finding",
    "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
]  # fmt: skip
MIMIC_METADATA_HEADER = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning",
]  # fmt: skip
MIMIC_IV_PATIENTS_HEADER = [
    "subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod",
]  # fmt: skip
MIMIC_IV_OMR_HEADER = ["subject_id", "chartdate", "seq_num", "result_name", "result_value"]
NIH_HEADER_LINE = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
PADCHEST_HEADER = [
    "", "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth",
    "PatientSex_DICOM", "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric",
    "Modality_DICOM", "Manufacturer_DICOM", "PhotometricInterpretation_DICOM",
    "PixelRepresentation_DICOM", "PixelAspectRatio_DICOM", "SpatialResolution_DICOM",
    "BitsStored_DICOM", "WindowCenter_DICOM", "WindowWidth_DICOM", "Rows_DICOM",
    "Columns_DICOM", "XRayTubeCurrent_DICOM", "Exposure_DICOM", "ExposureInuAs_DICOM",
    "ExposureTime", "RelativeXRayExposure_DICOM", "ReportID", "Report", "MethodLabel", "Labels",
    "Localizations", "LabelsLocalizationsBySentence", "labelCUIS", "LocalizationsCUIS",
]  # fmt: skip

NAME, PID, BIRTH, DATE = PHI  # "Doe^Jane", "PHI-12345", "19700101", "20200102"


def save_png(path, value=0.4, shape=(8, 6), bits=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full(shape, value, np.float32)
    if bits == 16:
        write_png(path, float_to_uint16(img))
    else:
        Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def gz_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ",".join(header) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n"
    with gzip.open(path, "wt") as fh:
        fh.write(text)


# ------------------------------------------------------------------------- MIMIC-CXR

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  {name} {pid} with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  {date}

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  The
 cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def mimic_tree(root, *, iv=True):
    """12 subjects; subject 10000001 has two studies (PA+LATERAL and AP), one with an
    'AP AXIAL' view that is dropped; files gzipped like the PhysioNet release."""
    split, meta, lab = [], [], []
    subjects = [str(10000000 + i) for i in range(12)]
    split_of = dict(zip(subjects, ["train"] * 8 + ["validate"] * 2 + ["test"] * 2, strict=True))
    n = 0
    for sid in subjects:
        studies = [f"5{sid[1:]}1", f"5{sid[1:]}2"] if sid == "10000001" else [f"5{sid[1:]}1"]
        for st in studies:
            views = ["PA", "LATERAL"] if st.endswith("1") else ["AP", "AP AXIAL"]
            for v in views:
                did = f"d{n:04d}-{v.replace(' ', '')}"
                n += 1
                split.append([did, st, sid, split_of[sid]])
                meta.append([did, sid, st, "CHEST (PA AND LAT)", v, 8, 6, "21800506", "213014.531",
                             "CHEST (PA AND LAT)", "postero-anterior", "Erect"])  # fmt: skip
                if v != "AP AXIAL":
                    save_png(root / f"files/p{sid[:2]}/p{sid}/s{st}/{did}.jpg")
            labels = [""] * 14
            labels[1] = "1.0" if sid == "10000001" else "0.0"  # Cardiomegaly
            labels[12] = "-1.0"  # Pneumothorax: uncertain
            if st != f"5{subjects[5][1:]}1":  # one study missing from the label table
                lab.append([sid, st, *labels])
            rep = root / f"files/p{sid[:2]}/p{sid}/s{st}.txt"
            rep.parent.mkdir(parents=True, exist_ok=True)
            if sid != "10000002":  # one study without a report file
                text = REPORT.format(name=NAME, pid=PID, date=DATE)
                if sid == "10000003":
                    text = text.replace(" FINDINGS:", " NOTE:")  # no FINDINGS section
                rep.write_text(text)
    gz_csv(root / "mimic-cxr-2.0.0-split.csv.gz", MIMIC_SPLIT_HEADER, split)
    gz_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", MIMIC_METADATA_HEADER, meta)
    gz_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", MIMIC_CHEXPERT_HEADER, lab)
    if iv:
        pats = [[s, "F" if int(s) % 2 else "M", 60, 2180, "2017 - 2019", ""] for s in subjects]
        pats[0][2] = 91  # MIMIC-IV's top-coded age
        write_csv(root / "mimic-iv" / "hosp" / "patients.csv", MIMIC_IV_PATIENTS_HEADER, pats)
        omr = [
            ["10000001", "2180-05-01", 1, "Weight (Lbs)", "220.5"],
            ["10000001", "2182-05-01", 1, "Weight (Lbs)", "100"],  # further away
            ["10000001", "2180-05-10", 1, "BMI (kg/m2)", "31.2"],
            ["10000001", "2180-05-10", 1, "Blood Pressure", "120/80"],
            ["10000004", "2179-01-01", 1, "Weight (Lbs)", "150"],  # outside the year window
            ["10000005", "2180-05-06", 1, "BMI (kg/m2)", "n/a"],  # unparsed
        ]
        write_csv(root / "mimic-iv" / "hosp" / "omr.csv", MIMIC_IV_OMR_HEADER, omr)
    return root


def test_report_section_parser():
    text = REPORT.format(name="X", pid="Y", date="Z")
    assert mimic_cxr.report_section(text) == (
        "There is no focal consolidation, pleural effusion or pneumothorax. The "
        "cardiomediastinal silhouette is normal."
    )
    assert mimic_cxr.report_section(text, "impression") == "No acute cardiopulmonary process."
    both = mimic_cxr.report_section(text, "findings+impression")
    assert both.startswith("There is no") and both.endswith("process.")
    assert mimic_cxr.report_section("INDICATION: x\nIMPRESSION: fine") == ""
    inline = "FINDINGS AND IMPRESSION: Heart size normal.\nNOTIFICATION: called Dr. ___"
    assert mimic_cxr.report_section(inline) == "Heart size normal."
    # A colon inside a sentence of the section does not start a new one.
    assert mimic_cxr.report_section("FINDINGS:\nLines: unchanged.\n") == "Lines: unchanged."
    with pytest.raises(ValueError):
        mimic_cxr.report_section(text, "history")


def test_mimic_records_labels_reports_demographics(tmp_path):
    src = mimic_tree(tmp_path / "mimic")
    df = mimic_cxr.build_records(src, mimic_iv_dir=src / "mimic-iv")
    assert_subject_level(df)
    assert df.attrs["dropped_views"] == 1 and df.attrs["skipped"] == 0
    assert len(df) == 12 * 2 + 1  # 12 PA+LAT studies, one AP study
    r = df.set_index("image_id")
    pa = df[(df["subject_id"] == "10000001") & (df["view"] == "PA")].iloc[0]
    assert pa["path"] == f"files/p10/p10000001/s{pa['study_id']}/{pa['image_id']}.jpg"
    assert pa["cardiomegaly"] == 1 and pd.isna(pa["pneumothorax"])  # -1 -> blank
    assert pa["lung_opacity"] == 0  # blank (not mentioned) -> 0
    assert pd.isna(pa["tuberculosis"])  # not a MIMIC label
    assert set(df["view"]) == {"PA", "AP", "LATERAL"}
    assert dict(df.groupby("subject_id")["split"].first().value_counts()) == {
        "train": 8, "val": 2, "test": 2,
    }  # fmt: skip
    # The study missing from the label table keeps every finding blank.
    s5 = df[df["subject_id"] == "10000005"]
    assert s5[list(schema.FINDINGS)].isna().all().all()
    # Reports: the FINDINGS section only.
    assert pa["report"].startswith("There is no focal consolidation")
    assert (df.loc[df["subject_id"] == "10000002", "report"] == "").all()
    assert (df.loc[df["subject_id"] == "10000003", "report"] == "").all()
    assert df.attrs["reports"] == 12 and df.attrs["no_section"] == 1
    # Demographics: sex, age = anchor_age + (2180 - 2180), capped; nearest omr in a year.
    assert pa["sex"] == "F" and pa["age"] == 60
    assert (r.loc[df.loc[df["subject_id"] == "10000000", "image_id"], "age"] == 90).all()
    assert pa["weight"] == pytest.approx(220.5 * 0.45359237) and pa["bmi"] == 31.2
    assert pd.isna(pa["height"])
    s4 = df[df["subject_id"] == "10000004"].iloc[0]
    assert pd.isna(s4["weight"])  # 16 months away
    assert df.attrs["omr_unparsed"] == 1
    # Without MIMIC-IV: no demographics; NegBio table missing -> a clear error.
    plain = mimic_cxr.build_records(src)
    assert (plain["sex"] == "").all() and plain["age"].isna().all()
    with pytest.raises(AdapterError, match=r"mimic-cxr-2\.0\.0-negbio\.csv: expected table"):
        mimic_cxr.build_records(src, labeler="negbio")
    out = tmp_path / "out"
    mimic_cxr.write_dataset(src, out, mimic_iv_dir=src / "mimic-iv")
    back = load_records(out, allow_unknown_labels=True)
    assert load_image(out, back.iloc[0]).shape == (8, 6)


def test_mimic_errors(tmp_path):
    src = mimic_tree(tmp_path / "m", iv=False)
    rows = pd.read_csv(src / "mimic-cxr-2.0.0-split.csv.gz", dtype=str)
    rows.loc[3, "split"] = "holdout"
    rows.to_csv(src / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    with pytest.raises(AdapterError, match=r"split\.csv\.gz: row 5, column 'split'"):
        mimic_cxr.build_records(src)
    src = mimic_tree(tmp_path / "m2", iv=False)
    lab = pd.read_csv(src / "mimic-cxr-2.0.0-chexpert.csv.gz", dtype=str, keep_default_na=False)
    lab.loc[0, "Lung Opacity"] = "maybe"
    lab.to_csv(src / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    with pytest.raises(AdapterError, match=r"chexpert\.csv\.gz: row 2, column 'Lung Opacity'"):
        mimic_cxr.build_records(src)
    src = mimic_tree(tmp_path / "m3", iv=False)
    victim = next(src.glob("files/p10/p10000007/*/*.jpg"))
    victim.unlink()
    with pytest.raises(AdapterError, match=victim.name):
        mimic_cxr.build_records(src)
    assert mimic_cxr.build_records(src, skip_bad=True).attrs["skipped"] == 1


# ------------------------------------------------------------------------------- NIH


def nih_tree(root, *, lists=True):
    rows = [
        "00000001_000.png,Cardiomegaly|Emphysema,0,1,58,M,PA,2682,2749,0.143,0.143",
        "00000001_001.png,Cardiomegaly|Effusion,1,1,58,M,PA,2894,2729,0.143,0.143",
        "00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.171,0.171",
        "00000003_000.png,Hernia,0,3,411,F,AP,2582,2991,0.143,0.143",  # a known age typo
        "00000004_000.png,Mass|Nodule|Pneumothorax,0,4,45,F,AP,2500,2048,0.168,0.168",
    ] + [f"{i:08d}_000.png,No Finding,0,{i},{20 + i},F,PA,2500,2048,0.168,0.168"
         for i in range(5, 25)]  # fmt: skip
    t = root / "Data_Entry_2017_v2020.csv"
    t.parent.mkdir(parents=True, exist_ok=True)
    t.write_text(NIH_HEADER_LINE + "\n" + "\n".join(rows) + "\n")
    names = [r.split(",")[0] for r in rows]
    for k, name in enumerate(names):
        save_png(root / f"images_{k % 3 + 1:03d}" / "images" / name)
    if lists:
        test = [n for n in names if int(n[:8]) % 5 == 0]
        (root / "test_list.txt").write_text("\n".join(test) + "\n")
        (root / "train_val_list.txt").write_text(
            "\n".join(n for n in names if n not in test) + "\n"
        )
    return root


def test_nih_labels_official_split_and_paths(tmp_path):
    src = nih_tree(tmp_path / "nih")
    df = nih_cxr14.build_records(src, seed=1)
    assert_subject_level(df)
    assert len(df) == 25 and df.attrs["split_source"] == "official"
    r = df.set_index("image_id")
    assert (
        r.loc["00000001_001", "cardiomegaly"] == 1
        and r.loc["00000001_001", "pleural_effusion"] == 1
    )
    assert r.loc["00000001_000", "pleural_effusion"] == 0
    assert r.loc["00000002_000", "no_finding"] == 1 and r.loc["00000001_000", "no_finding"] == 0
    assert r.loc["00000004_000", "nodule"] == 1 and r.loc["00000004_000", "pneumothorax"] == 1
    assert pd.isna(r.loc["00000002_000", "lung_opacity"])  # not an NIH label
    assert r.loc["00000003_000", "view"] == "AP" and np.isnan(r.loc["00000003_000", "age"])
    assert df.attrs["bad_age"] == 1 and r.loc["00000002_000", "age"] == 81
    assert r.loc["00000001_001", "study_id"] == "1_1" and r.loc["00000001_001", "subject_id"] == "1"
    assert r.loc["00000002_000", "path"] == "images_003/images/00000002_000.png"
    assert set(df.loc[df["subject_id"].astype(int) % 5 == 0, "split"]) == {"test"}
    assert set(df.loc[df["subject_id"].astype(int) % 5 != 0, "split"]) == {"train", "val"}
    seeded = nih_cxr14.build_records(nih_tree(tmp_path / "nih2", lists=False))
    assert seeded.attrs["split_source"] == "seeded"
    assert_subject_level(seeded)
    out = tmp_path / "out"
    nih_cxr14.write_dataset(src, out)
    assert load_image(out, load_records(out, allow_unknown_labels=True).iloc[0]).shape == (8, 6)


def test_nih_errors(tmp_path):
    src = nih_tree(tmp_path / "nih")
    t = src / "Data_Entry_2017_v2020.csv"
    t.write_text(t.read_text().replace("Cardiomegaly|Effusion", "Cardiomegaly|Efusion"))
    with pytest.raises(AdapterError, match=r"v2020\.csv: row 3, column 'Finding Labels'.*Efusion"):
        nih_cxr14.build_records(src)
    src = nih_tree(tmp_path / "nih2")
    lst = src / "train_val_list.txt"
    lst.write_text(lst.read_text().replace("00000002_000.png\n", ""))
    with pytest.raises(AdapterError, match=r"'00000002_000\.png'.*neither"):
        nih_cxr14.build_records(src)


# -------------------------------------------------------------------------- PadChest


def padchest_row(i, *, pid, labels, proj="PA", report="sin hallazgos", imgdir="0"):
    r = {c: "" for c in PADCHEST_HEADER}
    r.update({
        "": str(i), "ImageID": f"img{i:03d}.png", "ImageDir": imgdir, "StudyDate_DICOM": DATE,
        "StudyID": f"st{i:03d}", "PatientID": pid, "PatientBirth": "1950.0",
        "PatientSex_DICOM": "F" if i % 2 else "M", "ViewPosition_DICOM": proj, "Projection": proj,
        "MethodProjection": "Manual review of DICOM fields", "Pediatric": "No",
        "Report": report, "MethodLabel": "Physician", "Labels": labels,
    })  # fmt: skip
    return [r[c] for c in PADCHEST_HEADER]


def padchest_tree(root, *, broken=()):
    rows = [
        padchest_row(0, pid="pa", labels="['normal']"),
        padchest_row(1, pid="pa", labels="['pleural effusion', ' cardiomegaly']", proj="L"),
        padchest_row(2, pid="pb", labels="['nodule', 'chest drain tube', 'unchanged']"),
        padchest_row(3, pid="pc", labels="", proj="AP_horizontal"),  # null labels
        padchest_row(4, pid="pd", labels="['normal']", proj="COSTAL"),  # dropped view
    ] + [padchest_row(i, pid=f"p{i}", labels="['normal']", imgdir=str(i % 3))
         for i in range(5, 25)]  # fmt: skip
    write_csv(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", PADCHEST_HEADER, rows)
    for r in rows:
        p = save_png(root / r[2] / r[1], bits=16)
        if r[1] in broken:
            data = p.read_bytes()
            p.write_bytes(data[: len(data) // 2])  # truncated, as some PadChest files are
    return root


def test_padchest_labels_views_and_ages(tmp_path):
    src = padchest_tree(tmp_path / "pc")
    df = padchest.build_records(src, seed=0)
    assert_subject_level(df)
    assert df.attrs["dropped_views"] == 1 and df.attrs["skipped"] == 0
    r = df.set_index("image_id")
    assert r.loc["img000", "no_finding"] == 1 and r.loc["img000", "cardiomegaly"] == 0
    assert r.loc["img001", "view"] == "LATERAL"
    assert r.loc["img001", "pleural_effusion"] == 1 and r.loc["img001", "cardiomegaly"] == 1
    assert r.loc["img002", "nodule"] == 1 and r.loc["img002", "chest_tube"] == 1
    assert r.loc["img002", "no_finding"] == 0
    assert pd.isna(r.loc["img000", "aortic_enlargement"])  # no PadChest term
    assert r.loc["img003", "view"] == "AP" and r[list(schema.FINDINGS)].loc["img003"].isna().all()
    assert r.loc["img000", "age"] == 2020 - 1950 and r.loc["img000", "sex"] == "M"
    assert r.loc["img007", "path"] == "1/img007.png"
    assert r.loc["img000", "report"] == "sin hallazgos"
    assert r.loc["img000", "subject_id"] == r.loc["img001", "subject_id"] == "pa"
    img = load_image(src, r.loc["img000", "path"])
    assert img.dtype == np.float32 and abs(float(img.mean()) - 0.4) < 1e-4  # 16-bit read


def test_padchest_broken_pngs(tmp_path, caplog):
    src = padchest_tree(tmp_path / "pc", broken=("img006.png", "img009.png"))
    with pytest.raises(AdapterError, match=r"img006\.png: broken image.*2 unreadable"):
        padchest.build_records(src)
    with caplog.at_level(logging.WARNING):
        df = padchest.build_records(src, skip_bad=True)
    assert df.attrs["skipped"] == 2 and df.attrs["broken"] == ["0/img006.png", "0/img009.png"]
    assert "skipped 2 unreadable" in caplog.text
    assert not {"img006", "img009"} & set(df["image_id"])
    # "decode" finds the same files; "none" does not look.
    assert padchest.build_records(src, skip_bad=True, check_images="decode").attrs["skipped"] == 2
    assert len(padchest.build_records(src, check_images="none")) == len(df) + 2


def test_padchest_bad_label_cell(tmp_path):
    src = padchest_tree(tmp_path / "pc")
    t = src / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    t.write_text(t.read_text().replace("['nodule', 'chest drain tube', 'unchanged']", "nodule"))
    with pytest.raises(AdapterError, match=r"160K_01\.02\.19\.csv: row 4, column 'Labels'"):
        padchest.build_records(src)


# ---------------------------------------------------------------------- VinDr-RibCXR


def square(x0, y0, s):
    return [{"x": x0, "y": y0}, {"x": x0 + s, "y": y0}, {"x": x0 + s, "y": y0 + s},
            {"x": x0, "y": y0 + s}]  # fmt: skip


def ribcxr_tree(root, n_train=8, n_val=3):
    for split, n in (("train", n_train), ("val", n_val)):
        cols: dict = {"img": {}, **{r: {} for r in vindr_ribcxr.RIBS}}
        for i in range(n):
            name = f"VinDr_RibCXR_{split}_{i:03d}.png"
            save_png(root / "data" / split / "img" / name, shape=(40, 30))
            cols["img"][str(i)] = f"data/{split}/img/{name}"
            for k, rib in enumerate(vindr_ribcxr.RIBS):
                cols[rib][str(i)] = "None" if (i == 0 and rib == "L10") else square(k, k, 3)
        cols["R2"]["0"] = [[20, 5], [25, 5], [25, 9]]  # [x, y] pairs work too
        p = root / "data" / split / f"Vindr_RibCXR_{split}_mask.json"
        p.write_text(json.dumps(cols))
    return root


def test_ribcxr_records_and_masks(tmp_path):
    src = ribcxr_tree(tmp_path / "rib")
    out = tmp_path / "out"
    df = vindr_ribcxr.write_dataset(src, out, seed=2)
    assert_subject_level(df)
    assert len(df) == 11
    r = df.set_index("image_id")
    assert set(r.loc[r.index.str.contains("_val_"), "split"]) == {"test"}
    assert set(r.loc[r.index.str.contains("_train_"), "split"]) == {"train", "val"}
    assert df[list(schema.FINDINGS)].isna().all().all()
    back = load_records(out, allow_unknown_labels=True)
    row = back.set_index("image_id").loc["VinDr_RibCXR_train_000"]
    masks = load_masks(out, row)
    assert set(masks) == set(schema.RIB_MASKS)
    assert masks["rib_R1"].shape == (40, 30)
    expect = np.zeros((40, 30), bool)
    expect[0:4, 0:4] = True  # square(0, 0, 3), outline included
    np.testing.assert_array_equal(masks["rib_R1"], expect)
    assert masks["rib_R2"][5:10, 20:26].any() and masks["rib_R2"][5, 20]
    assert not masks["rib_L10"].any()  # "None": not annotated
    assert load_masks(out, back.iloc[5])["rib_L10"].any()
    assert load_image(out, row).shape == (40, 30)
    pd.testing.assert_frame_equal(
        vindr_ribcxr.build_records(src, seed=2).drop(columns="mask_path"),
        df.drop(columns="mask_path"),
    )


def test_ribcxr_bad_polygon(tmp_path):
    src = ribcxr_tree(tmp_path / "rib")
    p = src / "data" / "val" / "Vindr_RibCXR_val_mask.json"
    data = json.loads(p.read_text())
    data["L3"]["1"] = [{"x": 1, "y": 2}, {"x": "a", "y": 3}, {"x": 4, "y": 4}]
    p.write_text(json.dumps(data))
    with pytest.raises(AdapterError, match=r"val_mask\.json: row '1', rib L3"):
        vindr_ribcxr.build_records(src)


# ------------------------------------------------------------------------ shared bits


def test_registry_and_aliases():
    assert {"mimic_cxr", "nih_cxr14", "padchest", "vindr_ribcxr"} <= set(ADAPTERS)
    assert adapter_name("vindr") == "vindr_cxr" and adapter_name("VinDr-CXR") == "vindr_cxr"
    assert get_adapter("mimic") is mimic_cxr and get_adapter("ribcxr") is vindr_ribcxr
    for name in ADAPTERS:
        mod = get_adapter(name)
        assert callable(mod.build_records) and callable(mod.write_dataset)
    with pytest.raises(KeyError, match="unknown dataset"):
        adapter_name("openi")


def test_no_phi_in_any_adapter_output(tmp_path, caplog):
    from test_adapter_mimic_lungs import lungs_tree

    """PHI planted where each dataset could carry it (DICOM PatientName/PatientID/dates, report
    header lines, study and birth dates in the tables) never reaches records, masks or logs."""
    iv = tmp_path / "mimic" / "mimic-iv"
    cases = {
        "vindr_cxr": (vindr_tree(tmp_path / "vindr"), {}),
        "rsna_pneumonia": (rsna_tree(tmp_path / "rsna"), {}),
        "candid_ptx": (candid_tree(tmp_path / "candid")[0], {}),
        "chexpert": (chexpert_tree(tmp_path / "chexpert"), {}),
        "mimic_cxr": (mimic_tree(tmp_path / "mimic"), {"mimic_iv_dir": iv}),
        "nih_cxr14": (nih_tree(tmp_path / "nih"), {}),
        "padchest": (padchest_tree(tmp_path / "padchest", broken=("img008.png",)),
                     {"skip_bad": True}),
        "ribcxr": (ribcxr_tree(tmp_path / "ribcxr"), {}),
        "brax": (brax_tree(tmp_path / "brax"), {}),
        "mimic_lungs": (lungs_tree(tmp_path / "lungs")[0], {"mimic_iv_dir": iv}),
    }  # fmt: skip
    assert {adapter_name(k) for k in cases} == set(ADAPTERS)  # every adapter is covered
    texts = []
    with caplog.at_level(logging.DEBUG):
        for name, (src, kw) in cases.items():
            out = tmp_path / f"out_{name}"
            df = get_adapter(name).write_dataset(src, out, **kw)
            texts += [df.to_csv(index=False), repr(df.attrs), tree_text(out)]
    texts.append(caplog.text)
    assert "unreadable" in caplog.text  # the logs were really collected
    assert_no_phi(*texts)


# --------------------------------------------------------------------------- mixture


def test_mixture_cli_and_a_pretraining_step(tmp_path, monkeypatch, capsys):
    """`raddino dataset` merges MIMIC-CXR, NIH, PadChest and VinDr-RibCXR into one folder
    (ids prefixed, paths and masks resolving, the paper's all-splits rule) that
    `raddino pretrain` reads."""
    from raddino_lib import cli

    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path / "cache"))
    mimic = mimic_tree(tmp_path / "mimic")
    (mimic / "mimic-iv").rename(tmp_path / "mimic-iv")  # not found by the convention
    srcs = {
        "mimic": mimic,
        "nih": nih_tree(tmp_path / "nih"),
        "padchest": padchest_tree(tmp_path / "pc", broken=("img007.png",)),
        "ribcxr": ribcxr_tree(tmp_path / "rib"),
    }
    out = tmp_path / "multi-cxr"
    argv = ["dataset", *(f"{k}={v}" for k, v in srcs.items()), "--out", str(out)]
    assert cli.main([*argv, "--all-splits", "nih", "padchest"]) == 2  # broken PNG refused
    assert "img007.png" in capsys.readouterr().err
    assert cli.main([*argv, "--skip-bad", "--all-splits", "nih", "padchest"]) == 0
    assert "multi-cxr/records.csv (84 images)" in capsys.readouterr().out
    df = load_records(out)  # the adapter marker allows blank labels
    assert len(df) == 25 + 25 + 23 + 11  # PadChest: one COSTAL view dropped, one broken PNG
    assert df["image_id"].is_unique and df["subject_id"].str.contains("/").all()
    assert set(df["cohort"]) == {"mimic_cxr", "nih_cxr14", "padchest", "vindr_ribcxr"}
    assert set(df.loc[df["cohort"] == "nih_cxr14", "split"]) == {"train"}
    assert set(df.loc[df["cohort"] == "padchest", "split"]) == {"train"}
    assert set(df.loc[df["cohort"] == "mimic_cxr", "split"]) == {"train", "val", "test"}
    for _, row in df.groupby("cohort").head(1).iterrows():
        assert load_image(out, row).ndim == 2
    rib = df[df["cohort"] == "vindr_ribcxr"].iloc[0]
    assert rib["mask_path"].startswith("parts/vindr_ribcxr/masks/")
    assert set(load_masks(out, rib)) == set(schema.RIB_MASKS)
    code = cli.main(["pretrain", "--preset", "smoke", "--data", str(out), "--out",
                     str(tmp_path / "run"), "--stop-after", "1", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err[-2000:]
    assert "pretrained 1 steps" in capsys.readouterr().out
