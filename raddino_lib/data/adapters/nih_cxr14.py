"""NIH ChestX-ray14 -> generic records.

Layout: ``Data_Entry_2017_v2020.csv`` or ``Data_Entry_2017.csv`` (``Image Index, Finding
Labels, Follow-up #, Patient ID, Patient Age, Patient Gender`` (or ``Patient Sex``), ``View
Position, ...``), the official split lists ``train_val_list.txt`` and ``test_list.txt`` (one
image file name per line), and the PNGs anywhere below the folder (``images/``, or the
``images_001/images/`` ... ``images_012/images/`` of the Kaggle copy): each is found by its
file name.

Labels: ``Finding Labels`` is ``|``-separated ("Cardiomegaly|Effusion", "No Finding"), from
the fourteen labels below; an unknown name raises AdapterError naming the file, row and name.
NIH's labels are all-or-nothing text mining, so a mapped finding is 1 when listed, else 0:
Cardiomegaly, Effusion (pleural_effusion), Pneumonia, Pneumothorax, Pleural_Thickening,
Fibrosis (pulmonary_fibrosis), Nodule or Mass (nodule), No Finding. NIH has no label for the
other schema findings (they stay blank); Atelectasis, Consolidation, Edema, Emphysema, Hernia
and Infiltration have no schema column.

Splits: ``test_list.txt`` -> test; ``val_fraction`` of the ``train_val_list.txt`` PATIENTS ->
val (seeded), the rest train. Without the two lists, 70/15/15 by patient, seeded
(``df.attrs["split_source"]`` says which). An image in neither list raises AdapterError.
Subject = ``Patient ID``, study = ``{Patient ID}_{Follow-up #}``, image = the file stem. View
PA/AP from ``View Position``; sex M/F; age in years, capped at 90, NaN for the
impossible ages of the 2017 table (over 120; counted in ``df.attrs["bad_age"]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from raddino_lib.data.adapters._common import (
    AdapterError,
    cap_age,
    check_files,
    finish,
    index_files,
    read_table,
    records_frame,
    records_writer,
    require_table,
    split_subjects,
)

TABLES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
NIH_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "No Finding",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
LABEL_MAP: dict[str, str] = {
    "Cardiomegaly": "cardiomegaly",
    "Effusion": "pleural_effusion",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Pleural_Thickening": "pleural_thickening",
    "Fibrosis": "pulmonary_fibrosis",
    "Nodule": "nodule",
    "Mass": "nodule",
    "No Finding": "no_finding",
}
REQUIRED = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age")


def _read_list(path: Path) -> set[str]:
    return {ln.strip() for ln in path.read_text().splitlines() if ln.strip()}


def build_records(
    src_dir: str | Path, *, seed: int = 0, skip_bad: bool = False, val_fraction: float = 0.15
) -> pd.DataFrame:
    """NIH ChestX-ray14 folder -> records DataFrame (exactly schema.RECORD_COLUMNS).

    ``df.attrs``: ``skipped`` (images missing on disk, ``skip_bad=True`` only),
    ``split_source`` ("official" or "seeded"), ``bad_age``.
    """
    src = Path(src_dir)
    table = require_table(src, TABLES)
    raw = read_table(table, REQUIRED)
    sex_col = next((c for c in ("Patient Gender", "Patient Sex") if c in raw.columns), None)
    if sex_col is None or "View Position" not in raw.columns:
        raise AdapterError(
            f"{table}: needs 'Patient Gender' (or 'Patient Sex') and 'View Position' columns"
        )
    index = index_files(src, (".png",))
    official = (src / TRAIN_VAL_LIST).is_file() and (src / TEST_LIST).is_file()
    test_set = _read_list(src / TEST_LIST) if official else set()
    trainval = _read_list(src / TRAIN_VAL_LIST) if official else set()
    rows, bad_age = [], 0
    for i, r in enumerate(raw.to_dict("records")):
        line = i + 2
        name = r["Image Index"].strip()
        if not name:
            raise AdapterError(f"{table}: row {line}: empty Image Index")
        pid = r["Patient ID"].strip()
        if not pid:
            raise AdapterError(f"{table}: row {line}: empty Patient ID")
        names = [t.strip() for t in r["Finding Labels"].split("|") if t.strip()]
        unknown = [t for t in names if t not in NIH_LABELS]
        if unknown or not names:
            raise AdapterError(
                f"{table}: row {line}, column 'Finding Labels': unknown label(s) {unknown} "
                f"(known: {', '.join(NIH_LABELS)})"
                if unknown
                else f"{table}: row {line}, column 'Finding Labels': empty"
            )
        view = r["View Position"].strip().upper()
        if view not in ("PA", "AP"):
            raise AdapterError(f"{table}: row {line}, column 'View Position': {view!r} not PA/AP")
        if official:
            if name in test_set:
                split = "test"
            elif name in trainval:
                split = "train"
            else:
                raise AdapterError(
                    f"{src / TEST_LIST}: image {name!r} (table row {line}) is in neither "
                    f"{TEST_LIST} nor {TRAIN_VAL_LIST}"
                )
        else:
            split = ""
        age = cap_age(r["Patient Age"])
        bad_age += bool(r["Patient Age"].strip()) and np.isnan(age)
        follow = r["Follow-up #"].strip() or "0"
        row = {
            "subject_id": pid,
            "study_id": f"{pid}_{follow}",
            "image_id": Path(name).stem,
            "path": index.get(name, f"images/{name}"),
            "split": split,
            "view": view,
            "cohort": "nih_cxr14",
            "sex": r[sex_col].strip().upper() if r[sex_col].strip().upper() in ("M", "F") else "",
            "age": age,
        }
        for f in set(LABEL_MAP.values()):
            row[f] = 0
        for t in names:
            if t in LABEL_MAP:
                row[LABEL_MAP[t]] = 1
        rows.append(row)
    df = records_frame(rows)
    if official:
        tr = df["split"] == "train"
        val = split_subjects(
            df.loc[tr, "subject_id"], seed, (1 - val_fraction, val_fraction), ("train", "val")
        )
        df.loc[tr, "split"] = [val[s] for s in df.loc[tr, "subject_id"]]
    else:
        splits = split_subjects(df["subject_id"], seed)
        df["split"] = [splits[s] for s in df["subject_id"]]
    df, skipped = check_files(df, src, skip_bad=skip_bad, table=table)
    out = finish(df, source=str(src), skipped=skipped)
    out.attrs.update(split_source="official" if official else "seeded", bad_age=int(bad_age))
    return out


write_dataset = records_writer(build_records)
