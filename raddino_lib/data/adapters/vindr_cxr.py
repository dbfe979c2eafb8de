"""VinDr-CXR (PhysioNet 1.0.0) -> generic records.

Layout: ``annotations/image_labels_train.csv`` and ``annotations/image_labels_test.csv``
(``image_id, rad_id`` + 28 label columns, 0/1), DICOMs ``train/{image_id}.dicom`` and
``test/{image_id}.dicom``. Each training image was read by 3 radiologists (one row each);
each test image has one consensus row.

Aggregation rule: a finding is positive when MORE THAN HALF of an image's readers mark it
(majority, 2 of 3; ``rule="any"`` = positive if any reader marks it). A blank cell counts
as "not marked". ``no_finding`` is aggregated the same way; with majority it stays
consistent (if >= 2 readers say "No finding", at most one marks anything else).

Splits: the official test set stays ``test``; ``val_fraction`` of the training images is
carved out as ``val`` by a seeded permutation. VinDr-CXR publishes no patient ids (one
image per study), so ``subject_id = study_id = image_id``.
View: ViewPosition from the DICOM header when present (PA/AP/LL...), else PA (the dataset
is frontal, mostly PA). Sex and age come from the header (age capped at 90), nothing else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from raddino_lib.data.adapters._common import (
    AdapterError,
    check_files,
    dicom_view,
    finish,
    parse_label,
    read_table,
    records_frame,
    records_writer,
    split_subjects,
)

# VinDr column -> schema finding (only findings the schema has; the rest are dropped).
LABEL_MAP: dict[str, str] = {
    "Lung Opacity": "lung_opacity",
    "Cardiomegaly": "cardiomegaly",
    "Pleural thickening": "pleural_thickening",
    "Aortic enlargement": "aortic_enlargement",
    "Pulmonary fibrosis": "pulmonary_fibrosis",
    "Tuberculosis": "tuberculosis",
    "Pneumothorax": "pneumothorax",
    "Rib fracture": "rib_fracture",
    "Pneumonia": "pneumonia",
    "Pleural effusion": "pleural_effusion",
    "Nodule/Mass": "nodule",
    "No finding": "no_finding",
}
REQUIRED = ("image_id", *LABEL_MAP)  # rad_id optional (absent = one reader per row)


def _aggregate(df: pd.DataFrame, table: Path, rule: str) -> pd.DataFrame:
    """Per-reader rows -> one row per image_id with 0/1 per mapped label."""
    vals = {}
    for col in LABEL_MAP:
        vals[col] = [
            parse_label(v, file=table, row=i + 2, column=col) for i, v in enumerate(df[col])
        ]
    lab = pd.DataFrame(vals)
    if (lab == -1).any().any():
        col = lab.columns[(lab == -1).any()][0]
        i = int(np.flatnonzero(lab[col] == -1)[0])
        raise AdapterError(f"{table}: row {i + 2}, column {col!r}: VinDr-CXR labels are 0/1")
    lab = lab.fillna(0.0)
    lab["image_id"] = df["image_id"].to_numpy()
    g = lab.groupby("image_id", sort=True)
    if rule == "majority":
        agg = (g.sum() > g.count() / 2.0).astype(int)
    elif rule == "any":
        agg = (g.max() > 0).astype(int)
    else:
        raise ValueError(f"rule must be 'majority' or 'any', got {rule!r}")
    agg["n_readers"] = g.size()
    return agg.reset_index()


def build_records(
    src_dir: str | Path,
    *,
    seed: int = 0,
    skip_bad: bool = False,
    rule: str = "majority",
    val_fraction: float = 0.15,
    read_headers: bool = True,
) -> pd.DataFrame:
    """VinDr-CXR folder -> records DataFrame (exactly schema.RECORD_COLUMNS).

    ``df.attrs["skipped"]`` counts images listed in a table but missing on disk (only with
    ``skip_bad=True``; otherwise that raises AdapterError). ``read_headers=False`` skips
    the DICOM headers (view PA, no sex/age).
    """
    src = Path(src_dir)
    rows: list[dict] = []
    for split in ("train", "test"):
        table = src / "annotations" / f"image_labels_{split}.csv"
        raw = read_table(table, REQUIRED)
        bad = raw["image_id"].str.strip() == ""
        if bad.any():
            raise AdapterError(f"{table}: row {int(np.flatnonzero(bad)[0]) + 2}: empty image_id")
        agg = _aggregate(raw, table, rule)
        if split == "train":
            val = split_subjects(
                agg["image_id"], seed, (1 - val_fraction, val_fraction), ("train", "val")
            )
        for rec in agg.to_dict("records"):
            iid = rec["image_id"]
            row = {
                "subject_id": iid,
                "study_id": iid,
                "image_id": iid,
                "path": f"{split}/{iid}.dicom",
                "split": val[iid] if split == "train" else "test",
                "view": "PA",
                "cohort": "vindr_cxr",
            }
            row.update({LABEL_MAP[c]: int(rec[c]) for c in LABEL_MAP})
            rows.append(row)
    df = records_frame(rows)
    df, skipped = check_files(df, src, skip_bad=skip_bad, table=src / "annotations")
    if read_headers:
        views, sexes, ages = [], [], []
        for p in df["path"]:
            view, hdr = dicom_view(src / p, default="PA")
            views.append(view)
            sexes.append(hdr.get("sex", ""))
            ages.append(hdr.get("age"))
        df["view"] = views
        df["sex"] = sexes
        df["age"] = pd.to_numeric(pd.Series(ages, dtype=object), errors="coerce").astype(float)
    return finish(df, source=str(src), skipped=skipped)


write_dataset = records_writer(build_records)
