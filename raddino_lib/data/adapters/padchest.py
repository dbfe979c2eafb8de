"""PadChest -> generic records.

Layout: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (optionally ``.gz``; a
leading unnamed index column, then ``ImageID, ImageDir, StudyDate_DICOM, StudyID, PatientID,
PatientBirth, PatientSex_DICOM, ViewPosition_DICOM, Projection, ..., Report, MethodLabel,
Labels, ...``) and 16-bit PNGs ``{ImageDir}/{ImageID}`` (folders ``0`` ... ``54``; a flat
folder of PNGs also works).

Labels: the ``Labels`` cell is a Python list literal (``"['pleural effusion', ' cardiomegaly']"``);
entries are stripped and lower-cased. A blank cell (PadChest's "null labels") leaves every
finding blank; a cell that is not a list of strings raises AdapterError naming the row. A
labelled image gets 1 for a finding when one of its terms (:data:`TERMS`) is listed, else 0
(the labels are read from the whole report, so not listed = not reported); ``no_finding`` is
the term ``normal``. Findings PadChest has no term for (aortic enlargement) stay blank.
Terms outside :data:`TERMS` are not schema findings and are ignored.

Images: PadChest ships some PNGs that do not decode (truncated files, zeroed chunks). With
``check_images="verify"`` (default) every listed PNG's chunk structure and CRCs are checked
with Pillow's ``verify()`` (fast, no decompression); ``"decode"`` decodes each image fully;
``"none"`` checks only that the file exists. A broken file raises AdapterError naming it and
the number found, or with ``skip_bad=True`` is dropped: ``df.attrs["skipped"]`` counts
missing and broken files, ``df.attrs["broken"]`` lists the broken ones (relative paths), and
a warning is logged.

Splits: PadChest publishes none: 70/15/15 by ``PatientID``, seeded. Study = ``StudyID``.
View (``Projection``): PA -> PA; AP and AP_horizontal -> AP; L -> LATERAL; other projections
(COSTAL, EXCLUDE, UNK, blank) are dropped and counted in ``df.attrs["dropped_views"]``.
Sex from ``PatientSex_DICOM`` (M/F); age = study year - ``PatientBirth``, capped at 90.
``report`` is PadChest's (Spanish, pre-processed) report text. No date is copied.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pandas as pd
from PIL import Image

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
from raddino_lib.data.readers import ImageReadError, read_image

log = logging.getLogger(__name__)

TABLES = ("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", "padchest_labels.csv")
REQUIRED = ("ImageID", "ImageDir", "StudyID", "PatientID", "Projection", "Labels")
VIEW_MAP = {"PA": "PA", "AP": "AP", "AP_HORIZONTAL": "AP", "L": "LATERAL"}
CHECKS = ("verify", "decode", "none")

# PadChest term -> schema finding.
TERMS: dict[str, str] = {
    "normal": "no_finding",
    "cardiomegaly": "cardiomegaly",
    "pleural effusion": "pleural_effusion",
    "pneumothorax": "pneumothorax",
    "pneumonia": "pneumonia",
    "nodule": "nodule",
    "multiple nodules": "nodule",
    "mass": "nodule",
    "pulmonary mass": "nodule",
    "pleural thickening": "pleural_thickening",
    "apical pleural thickening": "pleural_thickening",
    "pulmonary fibrosis": "pulmonary_fibrosis",
    "tuberculosis": "tuberculosis",
    "infiltrates": "lung_opacity",
    "consolidation": "lung_opacity",
    "alveolar pattern": "lung_opacity",
    "ground glass pattern": "lung_opacity",
    "rib fracture": "rib_fracture",
    "chest drain tube": "chest_tube",
    "pacemaker": "support_devices",
    "dual chamber device": "support_devices",
    "single chamber device": "support_devices",
    "electrical device": "support_devices",
    "nsg tube": "support_devices",
    "endotracheal tube": "support_devices",
    "tracheostomy tube": "support_devices",
    "central venous catheter": "support_devices",
    "central venous catheter via jugular vein": "support_devices",
    "central venous catheter via subclavian vein": "support_devices",
    "central venous catheter via umbilical vein": "support_devices",
    "reservoir central venous catheter": "support_devices",
    "catheter": "support_devices",
    "artificial heart valve": "support_devices",
    "artificial mitral heart valve": "support_devices",
    "artificial aortic heart valve": "support_devices",
}
COLUMNS = tuple(sorted(set(TERMS.values())))


def parse_labels(cell: str, *, file: Path | str, row: int) -> list[str] | None:
    """A ``Labels`` cell -> lower-cased stripped terms, or None for a blank cell."""
    s = str(cell).strip()
    if s == "" or s.lower() == "nan":
        return None
    try:
        val = ast.literal_eval(s)
    except (ValueError, SyntaxError):
        raise AdapterError(
            f"{file}: row {row}, column 'Labels': not a list literal: {s[:60]!r}"
        ) from None
    if not isinstance(val, list | tuple) or not all(isinstance(t, str) for t in val):
        raise AdapterError(f"{file}: row {row}, column 'Labels': not a list of strings: {s[:60]!r}")
    return [t.strip().lower() for t in val if t.strip()]


def _image_rel(src: Path, image_dir: str, image_id: str) -> str:
    d = image_dir.strip().removesuffix(".0")
    nested = f"{d}/{image_id}" if d else image_id
    if (src / nested).is_file() or not (src / image_id).is_file():
        return nested
    return image_id


def _broken(path: Path, check: str) -> str | None:
    """Why ``path`` cannot be read (None when it can)."""
    if check == "decode":
        try:
            read_image(path)
        except ImageReadError as e:
            return str(e)
        return None
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken files
        return f"{path}: broken image ({type(e).__name__}: {e})"
    return None


def build_records(
    src_dir: str | Path, *, seed: int = 0, skip_bad: bool = False, check_images: str = "verify"
) -> pd.DataFrame:
    """PadChest folder -> records DataFrame (exactly schema.RECORD_COLUMNS).

    ``df.attrs``: ``skipped`` (missing + broken images, ``skip_bad=True`` only), ``broken``
    (their paths), ``dropped_views``.
    """
    if check_images not in CHECKS:
        raise ValueError(f"check_images must be one of {CHECKS}, got {check_images!r}")
    src = Path(src_dir)
    table = require_table(src, TABLES)
    raw = read_table(table, REQUIRED)
    rows, dropped = [], 0
    for i, r in enumerate(raw.to_dict("records")):
        line = i + 2
        iid = r["ImageID"].strip()
        if not iid:
            raise AdapterError(f"{table}: row {line}: empty ImageID")
        pid = r["PatientID"].strip()
        if not pid:
            raise AdapterError(f"{table}: row {line}: empty PatientID")
        view = VIEW_MAP.get(r["Projection"].strip().upper())
        if view is None:
            dropped += 1
            continue
        terms = parse_labels(r["Labels"], file=table, row=line)
        birth = pd.to_numeric(r.get("PatientBirth", ""), errors="coerce")
        year = pd.to_numeric(str(r.get("StudyDate_DICOM", "")).strip()[:4], errors="coerce")
        sex = str(r.get("PatientSex_DICOM", "")).strip().upper()
        row = {
            "subject_id": pid,
            "study_id": r["StudyID"].strip() or iid,
            "image_id": Path(iid).stem,
            "path": _image_rel(src, r["ImageDir"], iid),
            "view": view,
            "cohort": "padchest",
            "sex": sex if sex in ("M", "F") else "",
            "age": cap_age(year - birth) if pd.notna(birth) and pd.notna(year) else float("nan"),
            "report": " ".join(str(r.get("Report", "")).split()),
        }
        if terms is not None:
            on = {TERMS[t] for t in terms if t in TERMS}
            row.update({c: int(c in on) for c in COLUMNS})
        rows.append(row)
    df = records_frame(rows)
    splits = split_subjects(df["subject_id"], seed)
    df["split"] = [splits[s] for s in df["subject_id"]]
    df, skipped = check_files(df, src, skip_bad=skip_bad, table=table)
    broken: list[str] = []
    if check_images != "none":
        whys = [_broken(src / p, check_images) for p in df["path"]]
        bad = [w is not None for w in whys]
        broken = [p for p, b in zip(df["path"], bad, strict=True) if b]
        if broken and not skip_bad:
            first = next(w for w in whys if w is not None)
            raise AdapterError(
                f"{first} ({len(broken)} unreadable image(s) listed in {table.name}; "
                "pass skip_bad=True to skip them)"
            )
        if broken:
            log.warning(
                "PadChest: skipped %d unreadable image(s), e.g. %s", len(broken), broken[:3]
            )
            df = df.loc[[not b for b in bad]].reset_index(drop=True)
    out = finish(df, source=str(src), skipped=skipped + len(broken))
    out.attrs.update(broken=broken, dropped_views=dropped)
    return out


write_dataset = records_writer(build_records)
