"""CheXpert (v1.0 or v1.0-small) -> generic records.

Layout: ``train.csv`` and ``valid.csv`` (``Path, Sex, Age, Frontal/Lateral, AP/PA`` + 14
labels with 1 / 0 / -1 (uncertain) / blank (not mentioned)); ``Path`` looks like
``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``. ``src_dir`` may be
the folder holding train.csv or its parent: each path is tried as given, then without its
first component.

Label policy (the schema allows only 1/0/blank): ``uncertain`` maps -1 to blank
("U-Ignore", default), 0 ("U-Zeros") or 1 ("U-Ones"); ``unmentioned`` maps blank cells to
0 (default: the usual CheXpert practice; "not mentioned" = negative) or keeps them blank.
Mapped findings: No Finding, Cardiomegaly, Lung Opacity, Pneumonia, Pneumothorax, Pleural
Effusion, Support Devices; others (e.g. Lung Lesion, Fracture) are not the schema's
findings and are dropped. Findings CheXpert does not label stay blank.

Splits: the official ``valid.csv`` (200 radiologist-labelled images) becomes ``test``
(``valid_as="val"`` keeps it as val); ``val_fraction`` of the training PATIENTS becomes
``val`` (seeded). subject = ``patientNNNNN``, study = ``patientNNNNN/studyN``, image =
``train/patientNNNNN/studyN/viewN_frontal`` (the path without prefix and suffix).
View: Lateral -> LATERAL, Frontal -> AP/PA column (other or blank frontal -> AP, counted
in ``df.attrs["view_defaulted"]``). Sex Male/Female -> M/F.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath

import pandas as pd

from raddino_lib.data.adapters._common import (
    AdapterError,
    check_files,
    finish,
    parse_label,
    read_table,
    records_frame,
    records_writer,
    split_subjects,
)

LABEL_MAP: dict[str, str] = {
    "No Finding": "no_finding",
    "Cardiomegaly": "cardiomegaly",
    "Lung Opacity": "lung_opacity",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural_effusion",
    "Support Devices": "support_devices",
}
REQUIRED = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *LABEL_MAP)
_UNCERTAIN = {"blank": math.nan, "zeros": 0.0, "ones": 1.0}
_UNMENTIONED = {"zeros": 0.0, "blank": math.nan}


def chexpert_labels(
    r: dict, table: Path, line: int, uncertain: str, unmentioned: str
) -> dict[str, float]:
    """The mapped findings of one table row with CheXpert-style cells (1 / 0 / -1 / blank):
    ``-1`` by the ``uncertain`` policy, blank by the ``unmentioned`` one (see the module
    doc); a bad cell raises AdapterError naming the table, line and column. Also used by
    the BRAX adapter, whose labels come from the same labeller's conventions."""
    out = {}
    for col, f in LABEL_MAP.items():
        v = parse_label(r[col], file=table, row=line, column=col)
        if v == -1.0:
            v = _UNCERTAIN[uncertain]
        elif math.isnan(v):
            v = _UNMENTIONED[unmentioned]
        out[f] = v
    return out


def _resolve(src: Path, p: str) -> str:
    """Path column value -> path relative to ``src`` (as given, or minus its first part)."""
    pp = PurePosixPath(p.strip())
    if (src / pp).is_file() or len(pp.parts) < 2:
        return str(pp)
    short = PurePosixPath(*pp.parts[1:])
    return str(short) if (src / short).is_file() else str(pp)


def _ids(p: str, table: Path, line: int) -> tuple[str, str, str]:
    parts = PurePosixPath(p).parts
    pat = next((i for i, s in enumerate(parts) if s.startswith("patient")), None)
    if pat is None or pat + 2 >= len(parts):
        raise AdapterError(f"{table}: row {line}: path {p!r} has no patientN/studyN/file part")
    subj, study, f = parts[pat], parts[pat + 1], parts[pat + 2]
    folder = f"{parts[pat - 1]}/" if pat > 0 else ""  # train/ or valid/: ids stay unique
    return subj, f"{subj}/{study}", f"{folder}{subj}/{study}/{PurePosixPath(f).stem}"


def build_records(
    src_dir: str | Path,
    *,
    seed: int = 0,
    skip_bad: bool = False,
    uncertain: str = "blank",
    unmentioned: str = "zeros",
    val_fraction: float = 0.15,
    valid_as: str = "test",
) -> pd.DataFrame:
    """CheXpert folder -> records DataFrame (exactly schema.RECORD_COLUMNS).

    ``df.attrs["skipped"]``: images missing on disk (``skip_bad=True`` only);
    ``df.attrs["view_defaulted"]``: frontal images without AP/PA, set to AP.
    """
    if uncertain not in _UNCERTAIN or unmentioned not in _UNMENTIONED:
        raise ValueError(f"uncertain in {list(_UNCERTAIN)}, unmentioned in {list(_UNMENTIONED)}")
    if valid_as not in ("test", "val"):
        raise ValueError(f"valid_as must be 'test' or 'val', got {valid_as!r}")
    src = Path(src_dir)
    rows: list[dict] = []
    defaulted = 0
    for name, official in (("train.csv", "train"), ("valid.csv", valid_as)):
        table = src / name
        raw = read_table(table, REQUIRED)
        for i, r in enumerate(raw.to_dict("records")):
            line = i + 2
            if not r["Path"].strip():
                raise AdapterError(f"{table}: row {line}: empty Path")
            subj, study, iid = _ids(r["Path"].strip(), table, line)
            fl, appa = r["Frontal/Lateral"].strip().lower(), r["AP/PA"].strip().upper()
            if fl == "lateral":
                view = "LATERAL"
            elif fl == "frontal":
                view = appa if appa in ("AP", "PA") else "AP"
                defaulted += appa not in ("AP", "PA")
            else:
                raise AdapterError(f"{table}: row {line}: Frontal/Lateral {fl!r} unknown")
            age = pd.to_numeric(r["Age"], errors="coerce")
            row = {
                "subject_id": subj,
                "study_id": study,
                "image_id": iid,
                "path": _resolve(src, r["Path"]),
                "split": official,
                "view": view,
                "cohort": "chexpert",
                "sex": {"male": "M", "female": "F"}.get(r["Sex"].strip().lower(), ""),
                "age": float(age) if pd.notna(age) else math.nan,
            }
            row.update(chexpert_labels(r, table, line, uncertain, unmentioned))
            rows.append(row)
    df = records_frame(rows)
    train = df["split"] == "train"
    val = split_subjects(
        df.loc[train, "subject_id"], seed, (1 - val_fraction, val_fraction), ("train", "val")
    )
    df.loc[train, "split"] = [val[s] for s in df.loc[train, "subject_id"]]
    df, skipped = check_files(df, src, skip_bad=skip_bad, table=src / "train.csv|valid.csv")
    out = finish(df, source=str(src), skipped=skipped)
    out.attrs["view_defaulted"] = int(defaulted)
    return out


write_dataset = records_writer(build_records)
