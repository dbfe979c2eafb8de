"""CANDID-PTX -> generic records (+ pneumothorax / chest-tube masks).

Layout: ``Pneumothorax_reports.csv`` (image id column ``SOPInstanceUID`` or
``anon_SOPUID``; ``EncodedPixels`` or ``mask_rle``; optional ``StudyInstanceUID`` and
``Report``), ``chest_tube.csv`` and ``acute_rib_fracture.csv`` (or
``Rib_fracture_mask_rle.csv``) with the same id/RLE columns. Several rows per image = several
regions. ``"-1"`` = negative. Images are found anywhere under the folder by file stem
(``{id}.dcm``/``.dicom``/``.jpg``/``.jpeg``/``.png``).

RLE: SIIM-ACR style on a 1024 x 1024 grid: pairs ``offset length`` where each offset
counts from the end of the previous run (0-based), over the pixels in COLUMN-major order.

Labels: the images of Pneumothorax_reports.csv are the dataset. ``pneumothorax`` = 1 when
any of its rows has an RLE, 0 when all are ``-1``, blank when all are blank.
``chest_tube``/``rib_fracture`` = 1 when the image has an RLE row in that file, else 0;
blank when the file is absent. Rib fractures are labels only (no mask name in the schema).

Subjects: CANDID-PTX publishes no patient column. For DICOM images the header's PatientID
groups the images in memory only; otherwise StudyInstanceUID (if present) groups them,
else each image is its own subject. Output ``subject_id``/``study_id`` are fresh
pseudonyms (``candid000001``, ``candid000001_s1``), numbered by the smallest image id of
the group, so no header value is copied. Splits 70/15/15 by subject, seeded.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from raddino_lib.data.adapters._common import (
    AdapterError,
    check_files,
    dicom_view,
    finish,
    read_table,
    records_frame,
    split_subjects,
    write_records,
)
from raddino_lib.data.io import write_masks

RLE_SHAPE = (1024, 1024)
REPORTS = "Pneumothorax_reports.csv"
CHEST_TUBE = "chest_tube.csv"
RIB_FRACTURE = ("acute_rib_fracture.csv", "Rib_fracture_mask_rle.csv")
ID_COLUMNS = ("SOPInstanceUID", "anon_SOPUID")
RLE_COLUMNS = ("EncodedPixels", "mask_rle")
IMAGE_SUFFIXES = (".dcm", ".dicom", ".jpg", ".jpeg", ".png")


def rle_decode(rle: str, shape: tuple[int, int] = RLE_SHAPE, *, where: str = "rle") -> np.ndarray:
    """SIIM-style relative, column-major RLE -> ``shape`` bool mask (``"-1"`` -> empty)."""
    h, w = shape
    flat = np.zeros(h * w, dtype=bool)
    s = str(rle).strip()
    if s in ("", "-1"):
        return flat.reshape(w, h).T
    try:
        nums = np.array([int(t) for t in s.split()], dtype=np.int64)
    except ValueError:
        raise AdapterError(f"{where}: RLE has a non-integer token") from None
    if nums.size % 2 or (nums < 0).any():
        raise AdapterError(f"{where}: RLE must be non-negative 'offset length' pairs")
    pos = 0
    for off, length in nums.reshape(-1, 2):
        pos += int(off)
        end = pos + int(length)
        if end > h * w:
            raise AdapterError(f"{where}: RLE runs past the {h}x{w} grid")
        flat[pos:end] = True
        pos = end
    return flat.reshape(w, h).T


def rle_encode(mask: np.ndarray) -> str:
    """Inverse of :func:`rle_decode` (empty mask -> ``"-1"``); for tests and fixtures."""
    flat = np.asarray(mask, dtype=bool).T.ravel()
    d = np.diff(np.concatenate([[0], flat.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    if starts.size == 0:
        return "-1"
    out, prev = [], 0
    for s, e in zip(starts, ends, strict=True):
        out += [int(s - prev), int(e - s)]
        prev = e
    return " ".join(map(str, out))


def _table(src: Path, name: str) -> tuple[pd.DataFrame, Path, str, str] | None:
    path = src / name
    if not path.is_file():
        return None
    df = read_table(path)
    idc = next((c for c in ID_COLUMNS if c in df.columns), None)
    rlc = next((c for c in RLE_COLUMNS if c in df.columns), None)
    if idc is None or rlc is None:
        raise AdapterError(
            f"{path}: needs an id column {ID_COLUMNS} and an RLE column {RLE_COLUMNS}, "
            f"has {list(df.columns)}"
        )
    bad = df[idc].str.strip() == ""
    if bad.any():
        raise AdapterError(f"{path}: row {int(np.flatnonzero(bad)[0]) + 2}: empty image id")
    return df, path, idc, rlc


def _rles(tab) -> dict[str, list[tuple[int, str]]]:
    """image id -> [(csv line, rle string)] of a table."""
    df, _, idc, rlc = tab
    out: dict[str, list[tuple[int, str]]] = {}
    for i, (iid, r) in enumerate(zip(df[idc], df[rlc], strict=True)):
        out.setdefault(iid.strip(), []).append((i + 2, str(r).strip()))
    return out


def _label(rows: list[tuple[int, str]], path: Path) -> float:
    vals = [r for _, r in rows]
    for line, r in rows:
        if r not in ("", "-1") and not all(t.isdigit() for t in r.split()):
            raise AdapterError(f"{path}: row {line}: RLE/label {r[:40]!r} is not an RLE or -1")
    if any(r not in ("", "-1") for r in vals):
        return 1.0
    if any(r == "-1" for r in vals):
        return 0.0
    return math.nan


def _index_images(src: Path) -> dict[str, str]:
    """File stem -> path relative to ``src`` for every image file under it."""
    out: dict[str, str] = {}
    for root, _dirs, files in os.walk(src):
        for f in sorted(files):
            stem, suf = os.path.splitext(f)
            if suf.lower() in IMAGE_SUFFIXES and stem not in out:
                out[stem] = str(Path(root, f).relative_to(src)).replace(os.sep, "/")
    return out


def _patient_key(path: Path) -> str | None:
    """PatientID of a DICOM, used only to group images (never returned by the adapter)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except Exception:  # noqa: BLE001
        return None
    v = str(ds.get("PatientID", "") or "").strip()
    return v or None


def _build(src: Path, seed: int, skip_bad: bool, read_headers: bool):
    rep = _table(src, REPORTS)
    if rep is None:
        raise AdapterError(f"{src / REPORTS}: expected table not found")
    rep_df, rep_path, rep_id, _ = rep
    ptx = _rles(rep)
    tube_tab = _table(src, CHEST_TUBE)
    tube = _rles(tube_tab) if tube_tab else None
    rib_tab = next((t for t in (_table(src, n) for n in RIB_FRACTURE) if t), None)
    rib = _rles(rib_tab) if rib_tab else None
    study = {}
    report = {}
    for iid, st, rp in zip(
        rep_df[rep_id].str.strip(),
        rep_df.get("StudyInstanceUID", pd.Series([""] * len(rep_df))),
        rep_df.get("Report", pd.Series([""] * len(rep_df))),
        strict=True,
    ):
        study.setdefault(iid, st.strip())
        report.setdefault(iid, rp.strip())
    index = _index_images(src)
    rows = []
    for iid in sorted(ptx):
        row = {
            "image_id": iid,
            "path": index.get(iid, f"{iid}.dcm"),
            "view": "PA",
            "cohort": "candid_ptx",
            "report": report.get(iid, ""),
            "pneumothorax": _label(ptx[iid], rep_path),
        }
        if tube is not None:
            row["chest_tube"] = _label(tube[iid], tube_tab[1]) == 1.0 if iid in tube else 0
        if rib is not None:
            row["rib_fracture"] = _label(rib[iid], rib_tab[1]) == 1.0 if iid in rib else 0
        rows.append(row)
    df = records_frame(rows)
    df, skipped = check_files(df, src, skip_bad=skip_bad, table=rep_path)
    # Subjects: header PatientID (in memory) > StudyInstanceUID > the image itself.
    keys, views, sexes, ages = [], [], [], []
    for iid, p in zip(df["image_id"], df["path"], strict=True):
        key = None
        view, hdr = "PA", {}
        if read_headers and Path(p).suffix.lower() in (".dcm", ".dicom"):
            view, hdr = dicom_view(src / p, default="PA")
            key = _patient_key(src / p)
        keys.append(("p", key) if key else ("s", study[iid]) if study.get(iid) else ("i", iid))
        views.append(view)
        sexes.append(hdr.get("sex", ""))
        ages.append(hdr.get("age"))
    df["view"], df["sex"] = views, sexes
    df["age"] = pd.to_numeric(pd.Series(ages, dtype=object), errors="coerce").astype(float)
    first: dict[tuple, str] = {}
    for k, iid in zip(keys, df["image_id"], strict=True):
        first[k] = min(first.get(k, iid), iid)
    pseud = {k: f"candid{n + 1:06d}" for n, k in enumerate(sorted(first, key=first.get))}
    df["subject_id"] = [pseud[k] for k in keys]
    iids = list(df["image_id"])
    study_keys = [(k, study.get(iid, "") or iid) for k, iid in zip(keys, iids, strict=True)]
    firsts: dict[tuple, str] = {}
    for sk, iid in zip(study_keys, df["image_id"], strict=True):
        firsts[sk] = min(firsts.get(sk, iid), iid)
    counter: dict[str, int] = {}
    study_ids: dict[tuple, str] = {}
    for sk in sorted(firsts, key=firsts.get):
        subj = pseud[sk[0]]
        counter[subj] = counter.get(subj, 0) + 1
        study_ids[sk] = f"{subj}_s{counter[subj]}"
    df["study_id"] = [study_ids[sk] for sk in study_keys]
    splits = split_subjects(df["subject_id"], seed)
    df["split"] = [splits[s] for s in df["subject_id"]]
    masks = {
        "pneumothorax": (ptx, rep_path),
        "chest_tube": (tube, tube_tab[1] if tube_tab else None),
    }
    return finish(df, source=str(src), skipped=skipped), masks


def build_records(
    src_dir: str | Path, *, seed: int = 0, skip_bad: bool = False, read_headers: bool = True
) -> pd.DataFrame:
    """CANDID-PTX folder -> records DataFrame (exactly schema.RECORD_COLUMNS; no masks).

    ``df.attrs["skipped"]`` counts images missing on disk (``skip_bad=True`` only).
    """
    return _build(Path(src_dir), seed, skip_bad, read_headers)[0]


def write_dataset(
    src_dir: str | Path, out_dir: str | Path, *, link: str = "symlink", **kw
) -> pd.DataFrame:
    """Records + ``out_dir/masks/{image_id}.npz`` (``pneumothorax``, and ``chest_tube``
    when chest_tube.csv exists; union of an image's regions, 1024 x 1024) + records.csv."""
    src, out = Path(src_dir), Path(out_dir)
    df, masks = _build(
        src, kw.get("seed", 0), kw.get("skip_bad", False), kw.get("read_headers", True)
    )
    mask_paths = []
    for iid, ptx_label in zip(df["image_id"], df["pneumothorax"], strict=True):
        arrays = {}
        for name, (rles, path) in masks.items():
            if rles is None or (name == "pneumothorax" and pd.isna(ptx_label)):
                continue
            m = np.zeros(RLE_SHAPE, dtype=bool)
            for line, r in rles.get(iid, []):
                m |= rle_decode(r, RLE_SHAPE, where=f"{path}: row {line}")
            arrays[name] = m
        if arrays:
            rel = f"masks/{iid}.npz"
            write_masks(out / rel, arrays)
            mask_paths.append(rel)
        else:
            mask_paths.append("")
    df["mask_path"] = mask_paths
    write_records(df, src, out, link=link)
    return df
