"""Load and validate a dataset folder in the project's generic on-disk format.

Layout: ``records.csv`` (columns exactly :data:`schema.RECORD_COLUMNS`), images under the
folder (``path`` column, relative), optional packed mask archives (``mask_path``; see
:func:`raddino_lib.data.io.encode_masks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from raddino_lib.data import schema
from raddino_lib.data.io import read_masks
from raddino_lib.data.readers import read_image

_LABEL_VALUES = {0, 1}


class RecordsError(ValueError):
    """A records.csv that does not follow the schema (message names the file and problem)."""


#: Written by the dataset adapters beside records.csv: a real dataset, whose labels may be blank.
ADAPTER_MARKER = "adapter.json"


def load_records(root: str | Path, *, allow_unknown_labels: bool | None = None) -> pd.DataFrame:
    """Read ``root/records.csv`` and validate it -> DataFrame (one row per image).

    Checks: exact columns in order; unique image ids; split in schema.SPLITS; view in
    schema.VIEWS; finding columns 0/1 (blank allowed only with ``allow_unknown_labels``,
    e.g. for real data); no_finding consistent; bmi consistent with weight/height; no subject
    in two splits. Finding columns come back as nullable Int8. ``allow_unknown_labels=None``
    (default) allows blanks exactly in folders a dataset adapter wrote (they hold
    :data:`ADAPTER_MARKER`); the phantom's labels must be complete.
    """
    if allow_unknown_labels is None:
        allow_unknown_labels = (Path(root) / ADAPTER_MARKER).is_file()
    path = Path(root) / "records.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no records.csv in the dataset folder {root}")
    df = pd.read_csv(
        path,
        dtype={
            "subject_id": str,
            "study_id": str,
            "image_id": str,
            "path": str,
            "mask_path": str,
            "report": str,
            "sex": str,
        },
        keep_default_na=False,
        na_values={f: [""] for f in (*schema.FINDINGS, "age", "weight", "height", "bmi")},
    )
    cols = tuple(df.columns)
    if cols != schema.RECORD_COLUMNS:
        missing = [c for c in schema.RECORD_COLUMNS if c not in cols]
        extra = [c for c in cols if c not in schema.RECORD_COLUMNS]
        raise RecordsError(
            f"{path}: columns do not match schema.RECORD_COLUMNS "
            f"(missing {missing}, unexpected {extra}, or wrong order)"
        )
    if df["image_id"].duplicated().any():
        dup = df.loc[df["image_id"].duplicated(), "image_id"].iloc[0]
        raise RecordsError(f"{path}: duplicate image_id {dup!r}")
    bad = ~df["split"].isin(schema.SPLITS)
    if bad.any():
        raise RecordsError(
            f"{path}: split must be one of {schema.SPLITS}, got {df.loc[bad, 'split'].iloc[0]!r} "
            f"(row {int(np.flatnonzero(bad)[0]) + 2})"
        )
    bad = ~df["view"].isin(schema.VIEWS)
    if bad.any():
        raise RecordsError(
            f"{path}: view must be one of {schema.VIEWS}, got {df.loc[bad, 'view'].iloc[0]!r}"
        )
    for f in schema.FINDINGS:
        col = df[f]
        if col.isna().any() and not allow_unknown_labels:
            raise RecordsError(
                f"{path}: finding column {f!r} has blank values "
                f"(row {int(np.flatnonzero(col.isna())[0]) + 2})"
            )
        vals = set(col.dropna().unique().tolist())
        if not vals <= _LABEL_VALUES:
            raise RecordsError(
                f"{path}: finding column {f!r} must be 0/1, found {sorted(vals - _LABEL_VALUES)}"
            )
        df[f] = col.astype("Int8")
    others = df[[f for f in schema.FINDINGS if f != "no_finding"]]
    if not allow_unknown_labels:
        expect = (others.sum(axis=1) == 0).astype("Int8")
        bad = expect != df["no_finding"]
        if bad.any():
            raise RecordsError(
                f"{path}: no_finding inconsistent with the other findings for image "
                f"{df.loc[bad, 'image_id'].iloc[0]!r}"
            )
    w, h, b = df["weight"], df["height"], df["bmi"]
    ok = w.notna() & h.notna() & b.notna()
    err = (b[ok] - w[ok] / (h[ok] / 100.0) ** 2).abs()
    if (err > 0.05).any():
        raise RecordsError(
            f"{path}: bmi != weight/(height/100)^2 for image "
            f"{df.loc[err[err > 0.05].index[0], 'image_id']!r}"
        )
    check_subject_splits(df, source=str(path))
    return df


def check_subject_splits(df: pd.DataFrame, source: str = "records") -> None:
    """Raise RecordsError if any subject_id appears in more than one split."""
    n = df.groupby("subject_id")["split"].nunique()
    if (n > 1).any():
        sid = n[n > 1].index[0]
        splits = sorted(df.loc[df["subject_id"] == sid, "split"].unique())
        raise RecordsError(
            f"{source}: subject {sid!r} appears in several splits {splits}; "
            "splits must be by subject"
        )


def _rel(row_or_path: Mapping | pd.Series | str | Path, key: str) -> str:
    if isinstance(row_or_path, (str, Path)):
        return str(row_or_path)
    return str(row_or_path[key])


def load_image(root: str | Path, row_or_path: Mapping | pd.Series | str | Path) -> np.ndarray:
    """Image of a record (or a path relative to ``root``) -> (H, W) float32 in [0, 1].

    PNG/JPEG (8 or 16 bit, colour flattened to grey) and DICOM (modality and VOI LUT,
    MONOCHROME1 inverted), see :func:`raddino_lib.data.readers.read_image`; an undecodable
    file raises :class:`~raddino_lib.data.readers.ImageReadError` naming it.
    """
    p = Path(root) / _rel(row_or_path, "path")
    if not p.exists():
        raise FileNotFoundError(f"{p}: image file listed in records.csv does not exist")
    return read_image(p)


def load_masks(root: str | Path, row: Mapping | pd.Series | str | Path) -> dict[str, np.ndarray]:
    """Masks of a record -> name -> (H, W) bool; {} when ``mask_path`` is empty (laterals)."""
    rel = _rel(row, "mask_path")
    if not rel or rel == "nan":
        return {}
    p = Path(root) / rel
    if not p.exists():
        raise FileNotFoundError(f"{p}: mask file listed in records.csv does not exist")
    return read_masks(p)
