"""MIMIC-CXR-JPG (PhysioNet 2.0.0/2.1.0) -> generic records, with MIMIC-CXR report sections
and MIMIC-IV demographics.

Layout (``src_dir``): ``mimic-cxr-2.0.0-split.csv`` (``dicom_id, study_id, subject_id,
split`` with train / validate / test), ``mimic-cxr-2.0.0-chexpert.csv`` or ``-negbio.csv``
(``subject_id, study_id`` + 14 labels: 1 / 0 / -1 / blank), ``mimic-cxr-2.0.0-metadata.csv``
(``dicom_id, ..., ViewPosition, ..., StudyDate``); each may be gzipped (``.csv.gz``). Images
``files/p{sid[:2]}/p{sid}/s{study}/{dicom_id}.jpg``.

Reports (optional, ``reports_dir``, default ``src_dir``): the MIMIC-CXR report files
``files/p{sid[:2]}/p{sid}/s{study}.txt`` (from MIMIC-CXR's ``mimic-cxr-reports.zip``). The
``report`` column holds the FINDINGS section (``section="findings"``; the paper's
report-generation target), ``"impression"`` or ``"findings+impression"``; see
:func:`report_section`. Nothing else of the report is copied (its header lines are where
free-text identifiers could survive de-identification). ``df.attrs["reports"]`` counts the
studies with a report file and ``["no_section"]`` those whose file has no such section.

Labels: ``labeler="chexpert"`` (default) or ``"negbio"``; the same policy as the CheXpert
adapter (``uncertain``: -1 -> blank / 0 / 1; ``unmentioned``: blank -> 0 or blank). Studies
missing from the label table keep every finding blank. Findings MIMIC-CXR does not label
(the VinDr and CANDID-PTX ones) stay blank.

Splits: the official split (``validate`` -> ``val``); it is by subject, which
:func:`~raddino_lib.data.adapters._common.finish` checks. ``seed`` is accepted for the common
signature and unused. View: ``ViewPosition`` PA / AP / LATERAL (and LL, RL); images with any
other or a blank view (e.g. "AP AXIAL", "LAO") are dropped and counted in
``df.attrs["dropped_views"]``.

Demographics (optional, ``mimic_iv_dir``: the MIMIC-IV folder holding ``hosp/`` or the
tables directly): ``patients.csv`` gives sex (``gender``) and age at the study,
``anchor_age + (study year - anchor_year)`` (MIMIC's shifted dates are consistent per
subject), capped at 90; without a StudyDate, ``anchor_age``. ``omr.csv`` gives weight
(``Weight (Lbs)`` or ``Weight``, pounds -> kg) and BMI (``BMI (kg/m2)`` or ``BMI``): for each
image the measurement of its subject nearest in date to the study within ``omr_window_days``
(the paper does not say how it matched them). Height is left blank: a weight and BMI from
different dates would not satisfy the records format's BMI check. ``df.attrs["omr_unparsed"]``
counts non-numeric values that were ignored. No date is copied to the records.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd

from raddino_lib.data.adapters._common import (
    AdapterError,
    cap_age,
    check_files,
    find_table,
    finish,
    read_table,
    records_frame,
    records_writer,
    require_table,
)
from raddino_lib.data.adapters.chexpert import (
    _UNCERTAIN,
    _UNMENTIONED,
    LABEL_MAP,
    chexpert_labels,
)

SPLIT = "mimic-cxr-2.0.0-split.csv"
METADATA = "mimic-cxr-2.0.0-metadata.csv"
LABELS = {"chexpert": "mimic-cxr-2.0.0-chexpert.csv", "negbio": "mimic-cxr-2.0.0-negbio.csv"}
SPLIT_NAMES = {"train": "train", "validate": "val", "val": "val", "test": "test"}
VIEW_MAP = {"PA": "PA", "AP": "AP", "LATERAL": "LATERAL", "LL": "LATERAL", "RL": "LATERAL"}
LBS_TO_KG = 0.45359237
WEIGHT_NAMES = ("Weight (Lbs)", "Weight")
BMI_NAMES = ("BMI (kg/m2)", "BMI")
SECTIONS = ("findings", "impression", "findings+impression")

# A section header: an upper-case name at the start of a line followed by a colon.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z /&()-]{1,48}?)[ \t]*:", re.MULTILINE)


def report_section(text: str, section: str = "findings") -> str:
    """One section of a MIMIC-CXR report, whitespace collapsed ("" when absent).

    Sections start at an upper-case header at the start of a line ending in ``:``
    (``FINDINGS:``, ``IMPRESSION:``, ``INDICATION:``...) and run to the next header.
    ``"findings"`` takes the headers starting with ``FINDING`` (``FINDINGS``, ``FINDINGS AND
    IMPRESSION``), ``"impression"`` those starting with ``IMPRESSION`` or ``CONCLUSION``;
    ``"findings+impression"`` joins both. Text on the header line after the colon belongs to
    the section.
    """
    if section not in SECTIONS:
        raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
    heads = list(_HEADER.finditer(text))
    parts: dict[str, list[str]] = {"findings": [], "impression": []}
    for i, m in enumerate(heads):
        name = " ".join(m.group(1).split())
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        body = " ".join(text[m.end() : end].split())
        if name.startswith("FINDING"):
            parts["findings"].append(body)
        elif name.startswith(("IMPRESSION", "CONCLUSION")):
            parts["impression"].append(body)
    if section == "findings+impression":
        return " ".join(p for p in (*parts["findings"], *parts["impression"]) if p)
    return " ".join(p for p in parts[section] if p)


def _int_id(value: str, table: Path, line: int, column: str) -> str:
    v = str(value).strip()
    if v.endswith(".0"):
        v = v[:-2]
    if not v.isdigit():
        raise AdapterError(f"{table}: row {line}, column {column!r}: {value!r} is not an id")
    return v


def _mimic_iv_table(root: Path, name: str) -> Path | None:
    return find_table(root / "hosp", [name]) or find_table(root, [name])


def _demographics(
    df: pd.DataFrame, study_dates: pd.Series, mimic_iv_dir: Path, window_days: int
) -> tuple[pd.DataFrame, int]:
    """Fill sex, age, weight and bmi of ``df`` in place from MIMIC-IV; returns (df, unparsed)."""
    pat_path = _mimic_iv_table(mimic_iv_dir, "patients.csv")
    if pat_path is None:
        raise AdapterError(f"{mimic_iv_dir / 'hosp' / 'patients.csv'}: expected table not found")
    pat = read_table(pat_path, ("subject_id", "gender", "anchor_age"))
    sex, anchor_age, anchor_year = {}, {}, {}
    has_year = "anchor_year" in pat.columns
    for i, r in enumerate(pat.to_dict("records")):
        sid = _int_id(r["subject_id"], pat_path, i + 2, "subject_id")
        g = r["gender"].strip().upper()
        sex[sid] = g if g in ("M", "F") else ""
        anchor_age[sid] = cap_age(r["anchor_age"]) if r["anchor_age"].strip() else math.nan
        y = pd.to_numeric(r["anchor_year"], errors="coerce") if has_year else math.nan
        anchor_year[sid] = float(y) if pd.notna(y) else math.nan
    subj = df["subject_id"]
    df["sex"] = [sex.get(s, "") for s in subj]
    years = pd.to_datetime(study_dates, format="%Y%m%d", errors="coerce").dt.year
    ages = []
    for s, y in zip(subj, years, strict=True):
        a, ay = anchor_age.get(s, math.nan), anchor_year.get(s, math.nan)
        ages.append(cap_age(a + (y - ay)) if pd.notna(y) and pd.notna(ay) else a)
    df["age"] = np.asarray(ages, dtype=float)

    omr_path = _mimic_iv_table(mimic_iv_dir, "omr.csv")
    if omr_path is None:
        return df, 0
    try:
        omr = pd.read_csv(
            omr_path,
            dtype=str,
            keep_default_na=False,
            usecols=["subject_id", "chartdate", "result_name", "result_value"],
        )
    except ValueError as e:
        raise AdapterError(f"{omr_path}: {e}") from None
    unparsed = 0
    when = pd.DataFrame(
        {
            "row": np.arange(len(df)),
            "subject_id": subj.astype(np.int64),
            "date": pd.to_datetime(study_dates, format="%Y%m%d", errors="coerce"),
        }
    )
    when = when[when["date"].notna()].sort_values("date")
    for column, names, scale in (("weight", WEIGHT_NAMES, LBS_TO_KG), ("bmi", BMI_NAMES, 1.0)):
        sel = omr[omr["result_name"].isin(names)]
        value = pd.to_numeric(sel["result_value"].str.strip(), errors="coerce")
        unparsed += int(value.isna().sum())
        m = pd.DataFrame(
            {
                "subject_id": pd.to_numeric(sel["subject_id"], errors="coerce"),
                "date": pd.to_datetime(sel["chartdate"], errors="coerce"),
                column: value * scale,
            }
        ).dropna()
        m["subject_id"] = m["subject_id"].astype(np.int64)
        # Same date twice: keep the mean, so the match does not depend on row order.
        m = m.groupby(["subject_id", "date"], as_index=False)[column].mean().sort_values("date")
        if len(when) == 0 or len(m) == 0:
            continue
        hit = pd.merge_asof(
            when,
            m,
            on="date",
            by="subject_id",
            direction="nearest",
            tolerance=pd.Timedelta(days=window_days),
        )
        out = np.full(len(df), np.nan)
        out[hit["row"].to_numpy()] = hit[column].to_numpy(dtype=float)
        df[column] = out
    return df, unparsed


def build_records(
    src_dir: str | Path,
    *,
    seed: int = 0,
    skip_bad: bool = False,
    labeler: str = "chexpert",
    uncertain: str = "blank",
    unmentioned: str = "zeros",
    reports_dir: str | Path | None = None,
    section: str = "findings",
    mimic_iv_dir: str | Path | None = None,
    omr_window_days: int = 365,
    only: Collection[str] | None = None,
) -> pd.DataFrame:
    """MIMIC-CXR-JPG folder -> records DataFrame (exactly schema.RECORD_COLUMNS).

    ``only``: keep just these dicom_ids (compared lower-cased); the others are neither
    listed nor looked for on disk (a subset such as the lung-mask images may be all that
    was downloaded). ``df.attrs``: ``skipped`` (images missing on disk, ``skip_bad=True`` only),
    ``dropped_views``, ``reports``, ``no_section``, ``omr_unparsed``.
    """
    del seed  # the official split is used
    if labeler not in LABELS:
        raise ValueError(f"labeler must be one of {sorted(LABELS)}, got {labeler!r}")
    if uncertain not in _UNCERTAIN or unmentioned not in _UNMENTIONED:
        raise ValueError(f"uncertain in {list(_UNCERTAIN)}, unmentioned in {list(_UNMENTIONED)}")
    if section not in SECTIONS:
        raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
    src = Path(src_dir)
    split_path = require_table(src, [SPLIT])
    split = read_table(split_path, ("dicom_id", "study_id", "subject_id", "split"))
    meta_path = require_table(src, [METADATA])
    meta = read_table(meta_path, ("dicom_id", "ViewPosition"))
    view_of = dict(zip(meta["dicom_id"].str.strip(), meta["ViewPosition"], strict=True))
    date_of = (
        dict(zip(meta["dicom_id"].str.strip(), meta["StudyDate"], strict=True))
        if "StudyDate" in meta.columns
        else {}
    )
    lab_path = require_table(src, [LABELS[labeler]])
    lab = read_table(lab_path, ("subject_id", "study_id", *LABEL_MAP))
    labels: dict[str, dict[str, float]] = {}
    for i, r in enumerate(lab.to_dict("records")):
        line = i + 2
        study = _int_id(r["study_id"], lab_path, line, "study_id")
        labels[study] = chexpert_labels(r, lab_path, line, uncertain, unmentioned)

    if only is not None:
        only = {str(d).lower() for d in only}
    rep_root = Path(reports_dir) if reports_dir is not None else src
    rows, dates, dropped, n_reports, no_section = [], [], 0, 0, 0
    report_cache: dict[str, str] = {}
    for i, r in enumerate(split.to_dict("records")):
        line = i + 2
        did = r["dicom_id"].strip()
        if not did:
            raise AdapterError(f"{split_path}: row {line}: empty dicom_id")
        if only is not None and did.lower() not in only:
            continue
        sid = _int_id(r["subject_id"], split_path, line, "subject_id")
        study = _int_id(r["study_id"], split_path, line, "study_id")
        name = r["split"].strip().lower()
        if name not in SPLIT_NAMES:
            raise AdapterError(
                f"{split_path}: row {line}, column 'split': {r['split']!r} is not "
                "train, validate or test"
            )
        view = VIEW_MAP.get(str(view_of.get(did, "")).strip().upper())
        if view is None:
            dropped += 1
            continue
        folder = f"files/p{sid[:2]}/p{sid}"
        if study not in report_cache:
            txt = rep_root / folder / f"s{study}.txt"
            text = ""
            if txt.is_file():
                n_reports += 1
                text = report_section(txt.read_text(encoding="utf-8", errors="replace"), section)
                no_section += text == ""
            report_cache[study] = text
        row = {
            "subject_id": sid,
            "study_id": study,
            "image_id": did,
            "path": f"{folder}/s{study}/{did}.jpg",
            "split": SPLIT_NAMES[name],
            "view": view,
            "cohort": "mimic_cxr",
            "report": report_cache[study],
            **labels.get(study, {}),
        }
        rows.append(row)
        dates.append(str(date_of.get(did, "")).strip().removesuffix(".0"))
    df = records_frame(rows)
    df["_date"] = dates
    df, skipped = check_files(df, src, skip_bad=skip_bad, table=split_path)
    unparsed = 0
    if mimic_iv_dir is not None:
        df, unparsed = _demographics(df, df["_date"], Path(mimic_iv_dir), omr_window_days)
    out = finish(df.drop(columns="_date"), source=str(src), skipped=skipped)
    out.attrs.update(
        dropped_views=dropped, reports=n_reports, no_section=no_section, omr_unparsed=unparsed
    )
    return out


write_dataset = records_writer(build_records)
