"""VinDr-RibCXR -> generic records + rib masks.

Layout: one JSON annotation file per official split (``train/..._mask.json`` and
``val/..._mask.json``; any ``*.json`` below the folder whose name or parent folder says
``train``, ``val`` or ``test``), images (PNG) below the folder. Each JSON is pandas'
column-oriented form, as the dataset's own loader reads it (``pd.read_json``): ``{"img":
{"0": "data/train/img/VinDr_RibCXR_train_000.png", ...}, "R1": {"0": [{"x": 409.1, "y":
312.4}, ...], ...}, ..., "L10": {...}}``; a rib that was not annotated is ``"None"``
(or null / an empty list). Points may also be ``[x, y]`` pairs. Pixel coordinates are in the
image's own frame (x right, y down).

Images are found by the ``img`` path as given (relative to the folder, or to the JSON's
folder), else by file name anywhere below the folder.

Masks (``write_dataset``): one ``masks/{image_id}.npz`` per image with the 20 masks
``rib_R1`` ... ``rib_R10``, ``rib_L1`` ... ``rib_L10`` (schema.RIB_MASKS; empty where a rib
is not annotated), each the filled polygon at the image's size (Pillow's polygon fill,
outline included). ``R``/``L`` are the dataset's labels, the patient's right and left.

Records: subject = study = image = the file stem (the dataset publishes no patient ids); the
official ``train`` split keeps ``1 - val_fraction`` as train and the rest as val (seeded),
``val``/``test`` -> test. View PA; every finding blank (the dataset has no labels).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from raddino_lib.data import schema
from raddino_lib.data.adapters._common import (
    AdapterError,
    check_files,
    finish,
    image_size,
    index_files,
    records_frame,
    split_subjects,
    write_records,
)
from raddino_lib.data.io import write_masks

RIBS: tuple[str, ...] = tuple(f"R{i}" for i in range(1, 11)) + tuple(f"L{i}" for i in range(1, 11))
MASK_OF = {r: f"rib_{r}" for r in RIBS}
assert tuple(MASK_OF.values()) == schema.RIB_MASKS
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _split_of(path: Path, src: Path) -> str | None:
    """The split a JSON belongs to: the first of train/val/test named by the file, else by its
    nearest parent folder."""
    for part in reversed([p.lower() for p in path.relative_to(src).parts]):
        for name in ("train", "val", "test"):
            if name in part:
                return name
    return None


def _annotation_files(src: Path) -> list[tuple[Path, str]]:
    found = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(".json"):
                p = Path(root, f)
                split = _split_of(p, src)
                if split is not None:
                    found.append((p, split))
    if not found:
        raise AdapterError(f"{src}: no VinDr-RibCXR annotation JSON (train/val *.json) found")
    return found


def _points(value: object, where: str) -> list[tuple[float, float]] | None:
    """A rib's polygon -> [(x, y)], or None when not annotated."""
    if value is None or value == "None" or (isinstance(value, float) and math.isnan(value)):
        return None
    if not isinstance(value, list):
        raise AdapterError(f"{where}: polygon must be a list of points, got {type(value).__name__}")
    if not value:
        return None
    pts = []
    for p in value:
        if isinstance(p, dict) and "x" in p and "y" in p:
            x, y = p["x"], p["y"]
        elif isinstance(p, list | tuple) and len(p) == 2:
            x, y = p
        else:
            raise AdapterError(f"{where}: point {p!r} is not {{'x', 'y'}} or [x, y]")
        try:
            pts.append((float(x), float(y)))
        except (TypeError, ValueError):
            raise AdapterError(f"{where}: point {p!r} has a non-numeric coordinate") from None
    if len(pts) < 3:
        raise AdapterError(f"{where}: a polygon needs at least 3 points, got {len(pts)}")
    return pts


def _load(src: Path) -> list[dict]:
    """Every annotated image: {image_id, path, split, json, key, ribs: {R1: points|None}}."""
    index = index_files(src, IMAGE_SUFFIXES)
    items = []
    for jpath, split in _annotation_files(src):
        try:
            data = json.loads(jpath.read_text())
        except (OSError, ValueError) as e:
            raise AdapterError(f"{jpath}: cannot parse JSON ({type(e).__name__}: {e})") from None
        if not isinstance(data, dict) or "img" not in data or not isinstance(data["img"], dict):
            raise AdapterError(f"{jpath}: expected an object with an 'img' column")
        missing = [r for r in RIBS if r not in data]
        if missing:
            raise AdapterError(f"{jpath}: missing rib columns {missing}")
        for key in sorted(data["img"], key=lambda k: (len(str(k)), str(k))):
            img = str(data["img"][key]).strip()
            if not img:
                raise AdapterError(f"{jpath}: row {key!r}: empty 'img'")
            pp = PurePosixPath(img.replace("\\", "/"))
            cands = [str(pp), str(PurePosixPath(jpath.parent.relative_to(src).as_posix()) / pp)]
            rel = next((c for c in cands if (src / c).is_file()), None)
            rel = rel or index.get(pp.name, str(pp))
            ribs = {
                r: _points(data[r].get(key) if isinstance(data[r], dict) else None,
                           f"{jpath}: row {key!r}, rib {r}")
                for r in RIBS
            }  # fmt: skip
            items.append(
                {"image_id": pp.stem, "path": rel, "split": split, "json": jpath, "ribs": ribs}
            )
    return items


def _build(src: Path, seed: int, skip_bad: bool, val_fraction: float):
    items = _load(src)
    train_ids = [it["image_id"] for it in items if it["split"] == "train"]
    val = split_subjects(train_ids, seed, (1 - val_fraction, val_fraction), ("train", "val"))
    rows = []
    for it in items:
        iid = it["image_id"]
        rows.append(
            {
                "subject_id": iid,
                "study_id": iid,
                "image_id": iid,
                "path": it["path"],
                "split": val[iid] if it["split"] == "train" else "test",
                "view": "PA",
                "cohort": "vindr_ribcxr",
            }
        )
    df = records_frame(rows)
    df, skipped = check_files(df, src, skip_bad=skip_bad, table=src)
    polys = {it["image_id"]: it["ribs"] for it in items}
    return finish(df, source=str(src), skipped=skipped), polys


def build_records(
    src_dir: str | Path, *, seed: int = 0, skip_bad: bool = False, val_fraction: float = 0.15
) -> pd.DataFrame:
    """VinDr-RibCXR folder -> records DataFrame (exactly schema.RECORD_COLUMNS; no masks).

    ``df.attrs["skipped"]`` counts images missing on disk (``skip_bad=True`` only).
    """
    return _build(Path(src_dir), seed, skip_bad, val_fraction)[0]


def rib_masks(ribs: dict, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """``{R1: points|None, ...}`` -> ``{rib_R1: (H, W) bool, ...}`` (filled polygons)."""
    h, w = shape
    out = {}
    for r in RIBS:
        canvas = Image.new("1", (w, h), 0)
        pts = ribs.get(r)
        if pts:
            xy = [(round(x), round(y)) for x, y in pts]
            ImageDraw.Draw(canvas).polygon(xy, fill=1, outline=1)
        out[MASK_OF[r]] = np.asarray(canvas, dtype=bool)
    return out


def write_dataset(
    src_dir: str | Path, out_dir: str | Path, *, link: str = "symlink", **kw
) -> pd.DataFrame:
    """Records + ``out_dir/masks/{image_id}.npz`` (20 rib masks at the image size) +
    records.csv."""
    src, out = Path(src_dir), Path(out_dir)
    df, polys = _build(
        src, kw.get("seed", 0), kw.get("skip_bad", False), kw.get("val_fraction", 0.15)
    )
    paths = []
    for iid, p in zip(df["image_id"], df["path"], strict=True):
        w, h = image_size(src / p)
        rel = f"masks/{iid}.npz"
        write_masks(out / rel, rib_masks(polys[iid], (h, w)))
        paths.append(rel)
    df["mask_path"] = paths
    write_records(df, src, out, link=link)
    return df
