"""BRAX (PhysioNet 1.1.0, Brazilian labelled chest X-rays) -> generic records.

Layout: ``master_spreadsheet_update.csv`` (1.0.0: ``master_spreadsheet.csv``) with one row
per image: ``DicomPath, PngPath`` (relative to the dataset folder), ``PatientID, PatientSex``
(M / F / O), ``PatientAge`` (5-year groups, e.g. ``55`` or ``"85 or more"``),
``AccessionNumber`` (the study), ``StudyDate`` (fictitious; never copied), the 14 CheXpert
labels (1 / 0 / -1 / blank, derived from Portuguese reports), ``ViewPosition`` (AP, PA, LL,
RL, RLD, LLD, RLO, LLO), ``Rows, Columns, Manufacturer``.

Images: the PNG when ``PngPath`` names a file on disk, else the DICOM of ``DicomPath``
(read with the DICOM reader: VOI LUT, MONOCHROME1 inverted). Views: AP and PA as they are,
LL and RL -> LATERAL; decubitus, oblique and blank views are dropped and counted in
``df.attrs["dropped_views"]``. Labels follow the CheXpert adapter's policy (``uncertain``,
``unmentioned``) on the same mapped findings. BRAX has no official split: subjects are split
70/15/15 (seeded). Ages: a group's lower bound in years ("85 or more" -> 85), capped at 90.
"""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath

import pandas as pd

from raddino_lib.data.adapters._common import (
    AdapterError,
    cap_age,
    check_files,
    finish,
    read_table,
    records_frame,
    records_writer,
    require_table,
    split_subjects,
)
from raddino_lib.data.adapters.chexpert import (
    _UNCERTAIN,
    _UNMENTIONED,
    LABEL_MAP,
    chexpert_labels,
)

TABLES = ("master_spreadsheet_update.csv", "master_spreadsheet.csv")
REQUIRED = (
    "DicomPath", "PngPath", "PatientID", "PatientSex", "PatientAge", "AccessionNumber",
    "ViewPosition", *LABEL_MAP,
)  # fmt: skip
VIEWS = {"AP": "AP", "PA": "PA", "LL": "LATERAL", "RL": "LATERAL", "L": "LATERAL"}


def parse_age(value: object) -> float:
    """BRAX's age group -> years: the first number in the cell (``"55"`` -> 55, ``"85 or
    more"`` -> 85, ``"40-44"`` -> 40), capped at 90; NaN when the cell has no number."""
    m = re.search(r"\d+(\.\d+)?", str(value))
    return cap_age(m.group(0)) if m else math.nan


def _image(src: Path, png: str, dcm: str, table: Path, line: int) -> str:
    png, dcm = png.strip(), dcm.strip()
    if png and (src / png).is_file():
        return str(PurePosixPath(png))
    if dcm and (src / dcm).is_file():
        return str(PurePosixPath(dcm))
    if not png and not dcm:
        raise AdapterError(f"{table}: row {line}: both PngPath and DicomPath are empty")
    return str(PurePosixPath(png or dcm))  # missing: check_files names it (or skips it)


def build_records(
    src_dir: str | Path,
    *,
    seed: int = 0,
    skip_bad: bool = False,
    uncertain: str = "blank",
    unmentioned: str = "zeros",
) -> pd.DataFrame:
    """BRAX folder -> records DataFrame (exactly schema.RECORD_COLUMNS).

    ``df.attrs["skipped"]``: images missing on disk (``skip_bad=True`` only);
    ``df.attrs["dropped_views"]``: rows whose view is not AP, PA or lateral.
    """
    if uncertain not in _UNCERTAIN or unmentioned not in _UNMENTIONED:
        raise ValueError(f"uncertain in {list(_UNCERTAIN)}, unmentioned in {list(_UNMENTIONED)}")
    src = Path(src_dir)
    table = require_table(src, TABLES)
    raw = read_table(table, REQUIRED)
    rows: list[dict] = []
    dropped = 0
    for i, r in enumerate(raw.to_dict("records")):
        line = i + 2
        subj, acc = r["PatientID"].strip(), r["AccessionNumber"].strip()
        if not subj or not acc:
            raise AdapterError(f"{table}: row {line}: empty PatientID or AccessionNumber")
        view = VIEWS.get(r["ViewPosition"].strip().upper())
        if view is None:
            dropped += 1
            continue
        path = _image(src, r["PngPath"], r["DicomPath"], table, line)
        row = {
            "subject_id": subj,
            "study_id": f"{subj}/{acc}",
            "image_id": str(PurePosixPath(path).with_suffix("")),
            "path": path,
            "split": "",
            "view": view,
            "cohort": "brax",
            "sex": {"M": "M", "F": "F"}.get(r["PatientSex"].strip().upper(), ""),
            "age": parse_age(r["PatientAge"]),
        }
        row.update(chexpert_labels(r, table, line, uncertain, unmentioned))
        rows.append(row)
    if not rows:
        raise AdapterError(f"{table}: no AP, PA or lateral image in {len(raw)} rows")
    df = records_frame(rows)
    splits = split_subjects(df["subject_id"], seed)
    df["split"] = [splits[s] for s in df["subject_id"]]
    df, skipped = check_files(df, src, skip_bad=skip_bad, table=table)
    out = finish(df, source=str(src), skipped=skipped)
    out.attrs["dropped_views"] = int(dropped)
    return out


write_dataset = records_writer(build_records)
