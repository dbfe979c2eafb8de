"""Shared pieces of the dataset adapters: label parsing, subject splits, path checks,
the records frame and ``write_dataset``'s path convention."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raddino_lib.atomic import atomic_write_text
from raddino_lib.data import schema
from raddino_lib.data.readers import ImageReadError, read_dicom_header
from raddino_lib.data.records import ADAPTER_MARKER, check_subject_splits

SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
SOURCE_LINK = "source"  # name of the symlink to the dataset folder inside out_dir


class AdapterError(ValueError):
    """A dataset's own files do not look as expected (message names the file and row)."""


def read_table(path: Path, required: Iterable[str] = ()) -> pd.DataFrame:
    """A dataset CSV as strings (blank cells stay ``""``); checks required columns."""
    if not path.is_file():
        raise AdapterError(f"{path}: expected table not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001
        raise AdapterError(f"{path}: cannot parse CSV ({type(e).__name__}: {e})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise AdapterError(f"{path}: missing columns {missing} (has {list(df.columns)})")
    return df


def find_table(src: Path, names: Iterable[str]) -> Path | None:
    """The first of ``names`` that exists in ``src`` as given or gzipped (``NAME.gz``)."""
    for name in names:
        for cand in (src / name, src / f"{name}.gz"):
            if cand.is_file():
                return cand
    return None


def require_table(src: Path, names: Iterable[str]) -> Path:
    """:func:`find_table` or AdapterError naming the expected file(s)."""
    names = list(names)
    found = find_table(src, names)
    if found is None:
        raise AdapterError(f"{src / names[0]}: expected table not found (nor {names[0]}.gz)")
    return found


def index_files(src: Path, suffixes: Iterable[str]) -> dict[str, str]:
    """File name -> path relative to ``src`` (``/``-separated) for every file under ``src``
    whose suffix is in ``suffixes`` (lower-case, with the dot); the first found wins, in a
    sorted walk, so the result does not depend on the file system's order."""
    suf = tuple(s.lower() for s in suffixes)
    out: dict[str, str] = {}
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(suf) and f not in out:
                out[f] = str(Path(root, f).relative_to(src)).replace(os.sep, "/")
    return out


def cap_age(value: object) -> float:
    """An age in years -> float capped at 90 (HIPAA Safe Harbor's 90+ group); NaN when
    missing, negative or implausible (over 120, e.g. NIH's known typos)."""
    try:
        v = float(str(value).strip().upper().removesuffix("Y"))
    except ValueError:
        return math.nan
    if not math.isfinite(v) or v < 0 or v > 120:
        return math.nan
    return float(min(v, 90.0))


def parse_label(value: object, *, file: Path | str, row: int, column: str) -> float:
    """A label cell -> 1.0, 0.0, -1.0 (uncertain) or NaN (blank).

    Accepts ``1``/``0``/``-1`` written as int or float (``1.0``). ``row`` is the CSV line
    number (header = line 1). Anything else raises AdapterError naming file, row, column.
    """
    s = str(value).strip()
    if s == "" or s.lower() == "nan":
        return math.nan
    try:
        v = float(s)
    except ValueError:
        v = math.nan
    if v in (1.0, 0.0, -1.0):
        return v
    raise AdapterError(
        f"{file}: row {row}, column {column!r}: label {s!r} is not 1, 0, -1 or blank"
    )


def split_subjects(
    subjects: Iterable[str],
    seed: int = 0,
    fractions: tuple[float, ...] = SPLIT_FRACTIONS,
    names: tuple[str, ...] = schema.SPLITS,
) -> dict[str, str]:
    """Subject -> split: a seeded permutation of the sorted unique subjects cut by
    ``fractions`` (rounded counts, remainder to the last split). Deterministic given the
    set of subjects and the seed; row order does not matter."""
    uniq = sorted(set(subjects))
    n = len(uniq)
    order = np.random.default_rng(seed).permutation(n)
    counts = [int(round(f * n)) for f in fractions[:-1]]
    out: dict[str, str] = {}
    start = 0
    for name, c in zip(names, [*counts, n], strict=True):
        for i in order[start : start + c]:
            out[uniq[i]] = name
        start = min(n, start + c)
    return out


def empty_records(n: int) -> pd.DataFrame:
    """A frame with exactly ``schema.RECORD_COLUMNS``: strings blank, numbers missing."""
    data: dict[str, object] = {}
    for c in schema.RECORD_COLUMNS:
        if c in schema.FINDINGS:
            data[c] = pd.array([pd.NA] * n, dtype="Int8")
        elif c in ("age", "weight", "height", "bmi"):
            data[c] = np.full(n, np.nan)
        else:
            data[c] = [""] * n
    return pd.DataFrame(data)


def records_frame(rows: list[Mapping[str, object]]) -> pd.DataFrame:
    """Rows (dicts with a subset of the columns) -> frame with exactly RECORD_COLUMNS."""
    df = empty_records(len(rows))
    if not rows:
        return df
    given = pd.DataFrame(list(rows))
    for c in given.columns:
        if c not in schema.RECORD_COLUMNS:
            raise ValueError(f"unknown record column {c!r}")
        if c in schema.FINDINGS:
            df[c] = pd.array(
                [
                    pd.NA if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
                    for v in given[c]
                ],
                dtype="Int8",
            )
        elif c in ("age", "weight", "height", "bmi"):
            df[c] = pd.to_numeric(given[c], errors="coerce").astype(float)
        else:
            df[c] = given[c].fillna("").astype(str).to_numpy()
    return df


def check_files(
    df: pd.DataFrame, src: Path, *, skip_bad: bool, table: Path | str
) -> tuple[pd.DataFrame, int]:
    """Drop (``skip_bad``) or reject rows whose ``path`` (relative to ``src``) is missing."""
    exists = np.array([(src / p).is_file() for p in df["path"]], dtype=bool)
    if exists.all():
        return df, 0
    if not skip_bad:
        i = int(np.flatnonzero(~exists)[0])
        raise AdapterError(
            f"{table}: image {df['image_id'].iloc[i]!r} has no file {src / df['path'].iloc[i]} "
            f"({int((~exists).sum())} missing in all; pass skip_bad=True to skip them)"
        )
    return df.loc[exists].reset_index(drop=True), int((~exists).sum())


def finish(df: pd.DataFrame, *, source: str, skipped: int = 0) -> pd.DataFrame:
    """Final checks (unique image ids, no subject in two splits); sets ``attrs``."""
    if df["image_id"].duplicated().any():
        dup = df.loc[df["image_id"].duplicated(), "image_id"].iloc[0]
        raise AdapterError(f"{source}: duplicate image_id {dup!r}")
    try:
        check_subject_splits(df, source=source)
    except ValueError as e:
        raise AdapterError(str(e)) from None
    df = df[list(schema.RECORD_COLUMNS)].reset_index(drop=True)
    df.attrs["skipped"] = int(skipped)
    df.attrs["source"] = source
    return df


def image_size(path: Path) -> tuple[int, int]:
    """An image file's ``(width, height)`` from its header, or AdapterError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # noqa: BLE001
        raise AdapterError(f"{path}: cannot read the image size ({type(e).__name__})") from None


def dicom_view(path: Path, default: str = "PA") -> tuple[str, dict]:
    """(view in schema.VIEWS, safe header with demographics) from a DICOM header.

    ViewPosition PA/AP/LL/RL/LATERAL maps to PA/AP/LATERAL; anything else -> ``default``.
    An unreadable header gives ``default`` and ``{}`` (the pixel read will report it).
    """
    try:
        hdr = read_dicom_header(path, demographics=True)
    except ImageReadError:
        return default, {}
    vp = str(hdr.get("ViewPosition", "")).strip().upper()
    view = {"PA": "PA", "AP": "AP", "LL": "LATERAL", "RL": "LATERAL", "LATERAL": "LATERAL"}
    return view.get(vp, default), hdr


def write_records(
    df: pd.DataFrame, src_dir: str | Path, out_dir: str | Path, *, link: str = "symlink"
) -> Path:
    """Write ``out_dir/records.csv`` for records whose ``path`` is relative to ``src_dir``.

    Path convention: ``records.load_image`` joins ``root / path``. With ``link="symlink"``
    (default) ``out_dir/source`` becomes a symlink to ``src_dir`` and paths are rewritten
    to ``source/<path>`` (relative, so the folder can move if the link is re-pointed);
    ``link="absolute"`` writes absolute paths instead (``root / abs`` is ``abs``). When
    ``out_dir`` is ``src_dir`` paths stay as they are. Also writes ``out_dir/adapter.json``
    (:data:`~raddino_lib.data.records.ADAPTER_MARKER`: cohorts, image count, the adapter's
    counts), so ``load_records`` accepts blank labels there. Returns the records.csv path.
    """
    src, out = Path(src_dir).resolve(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = df.copy()
    if out.resolve() != src:
        if link == "symlink":
            ln = out / SOURCE_LINK
            if ln.is_symlink() or ln.exists():
                if not ln.is_symlink() or Path(os.readlink(ln)).resolve() != src:
                    raise AdapterError(f"{ln}: exists and is not a symlink to {src}")
            else:
                ln.symlink_to(src, target_is_directory=True)
            df["path"] = [f"{SOURCE_LINK}/{p}" for p in df["path"]]
        elif link == "absolute":
            df["path"] = [str(src / p) for p in df["path"]]
        else:
            raise ValueError(f"link must be 'symlink' or 'absolute', got {link!r}")
    target = out / "records.csv"
    atomic_write_text(target, df[list(schema.RECORD_COLUMNS)].to_csv(index=False))
    write_marker(df, out)
    return target


def write_marker(df: pd.DataFrame, out_dir: str | Path, **extra: object) -> Path:
    """Write ``out_dir/adapter.json``, the marker that lets ``records.load_records`` accept
    blank labels in this folder: cohorts, image count and the adapter's integer counts
    (skipped images, dropped views...), never a path or an id; plus ``extra``."""
    info = {
        "cohorts": sorted(set(df["cohort"])),
        "images": len(df),
        "unknown_labels": True,
        "attrs": {k: v for k, v in df.attrs.items() if isinstance(v, int) and k != "source"},
        **extra,
    }
    target = Path(out_dir) / ADAPTER_MARKER
    atomic_write_text(target, json.dumps(info, indent=1, sort_keys=True) + "\n")
    return target


def records_writer(build_records: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
    """An adapter's ``write_dataset(src_dir, out_dir, *, link="symlink", **kw)``: its
    ``build_records(src_dir, **kw)`` then ``out_dir/records.csv`` (see :func:`write_records`)."""

    def write_dataset(src_dir: str | Path, out_dir: str | Path, **kw: Any) -> pd.DataFrame:
        link = kw.pop("link", "symlink")
        df = build_records(src_dir, **kw)
        write_records(df, src_dir, out_dir, link=link)
        return df

    write_dataset.__doc__ = (
        f":func:`{build_records.__module__}.build_records` then ``out_dir/records.csv``."
    )
    return write_dataset
