"""RSNA Pneumonia Detection -> generic records.

Layout: ``stage_2_train_labels.csv`` (``patientId, x, y, width, height, Target``; one row
per box, one row with blank box and Target 0 for negatives), DICOMs
``stage_2_train_images/{patientId}.dcm`` (or ``{patientId}.dcm`` directly in the folder).
Optional ``stage_2_detailed_class_info.csv`` (``patientId, class``): "Normal" sets
``no_finding=1``, the other classes 0; without it ``no_finding`` stays blank.

One row per image: ``pneumonia = max(Target)`` over its boxes; every other finding is
blank (unknown). The labelled stage-2 test set is not public, so splits are 70/15/15 by
``patientId`` (seeded); in this dataset ``patientId`` names one image, so it is the
subject, study and image id. View, sex and age come from the DICOM header.
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

LABELS = "stage_2_train_labels.csv"
CLASS_INFO = "stage_2_detailed_class_info.csv"
IMAGE_DIRS = ("stage_2_train_images", ".")


def _image_rel(src: Path, pid: str) -> str:
    for d in IMAGE_DIRS:
        rel = f"{pid}.dcm" if d == "." else f"{d}/{pid}.dcm"
        if (src / rel).is_file():
            return rel
    return f"{IMAGE_DIRS[0]}/{pid}.dcm"  # reported as missing by check_files


def build_records(
    src_dir: str | Path, *, seed: int = 0, skip_bad: bool = False, read_headers: bool = True
) -> pd.DataFrame:
    """RSNA Pneumonia folder -> records DataFrame (exactly schema.RECORD_COLUMNS).

    ``df.attrs["skipped"]`` counts images missing on disk (``skip_bad=True`` only).
    """
    src = Path(src_dir)
    table = src / LABELS
    raw = read_table(table, ("patientId", "x", "y", "width", "height", "Target"))
    target = []
    for i, (pid, t) in enumerate(zip(raw["patientId"], raw["Target"], strict=True)):
        if not pid.strip():
            raise AdapterError(f"{table}: row {i + 2}: empty patientId")
        v = parse_label(t, file=table, row=i + 2, column="Target")
        if np.isnan(v) or v == -1:
            raise AdapterError(f"{table}: row {i + 2}, column 'Target': must be 0 or 1, got {t!r}")
        target.append(int(v))
    per_image = pd.Series(target, index=raw["patientId"].str.strip()).groupby(level=0).max()
    normal: dict[str, int] = {}
    if (src / CLASS_INFO).is_file():
        info = read_table(src / CLASS_INFO, ("patientId", "class"))
        for pid, cls in zip(info["patientId"], info["class"], strict=True):
            normal[pid.strip()] = int(cls.strip().lower() == "normal")
    splits = split_subjects(per_image.index, seed)
    rows = []
    for pid, pna in per_image.items():
        row = {
            "subject_id": pid,
            "study_id": pid,
            "image_id": pid,
            "path": _image_rel(src, pid),
            "split": splits[pid],
            "view": "PA",
            "cohort": "rsna_pneumonia",
            "pneumonia": int(pna),
        }
        if pid in normal:
            if normal[pid] and pna:
                raise AdapterError(f"{src / CLASS_INFO}: {pid!r} is 'Normal' but has Target 1")
            row["no_finding"] = normal[pid]
        rows.append(row)
    df = records_frame(rows)
    df, skipped = check_files(df, src, skip_bad=skip_bad, table=table)
    if read_headers:
        hdrs = [dicom_view(src / p, default="PA") for p in df["path"]]
        df["view"] = [v for v, _ in hdrs]
        df["sex"] = [h.get("sex", "") for _, h in hdrs]
        ages = pd.Series([h.get("age") for _, h in hdrs], dtype=object)
        df["age"] = pd.to_numeric(ages, errors="coerce").astype(float)
    return finish(df, source=str(src), skipped=skipped)


write_dataset = records_writer(build_records)
