"""MIMIC-CXR lung masks (PhysioNet ``lung-segment-mimic-cxr``) with Chest ImaGenome lung-zone
boxes -> generic records + left/right lung and six lung-zone masks (the paper's "Lungs" and
"Lung zones" columns of Table 6; Appendix B.2).

Layout: ``src_dir`` is the MIMIC-CXR-JPG folder the MIMIC-CXR adapter reads (split, metadata
and label tables, ``files/p../p../s../{dicom_id}.jpg``; reports and MIMIC-IV demographics are
joined the same way, see :mod:`raddino_lib.data.adapters.mimic_cxr`). Beside them:

- ``masks_dir`` (default ``src_dir/lung-segment-mimic-cxr``, a folder or a symlink): one lung
  mask image per MIMIC-CXR image, anywhere below, named ``{dicom_id}{suffix}`` with ``suffix``
  one of :data:`MASK_SUFFIXES` and a PNG/JPEG extension. Any pixel above ``mask_threshold``
  is lung, so both a binary mask and the release's "segmented image" (lung pixels kept, the
  rest black) work. The release's own file names could not be checked here (no access); if
  they differ, symlink the files to ``{dicom_id}.png``. A mask whose size differs from the
  JPEG's is resized to it (nearest neighbour).
- ``imagenome_dir`` (default ``src_dir/chest-imagenome`` when it exists): Chest ImaGenome's
  scene graphs, ``{dicom_id}_SceneGraph.json`` anywhere below (the silver dataset's
  ``scene_graph/`` folder), each with ``objects`` holding ``bbox_name`` and
  ``original_x1/y1/x2/y2`` in the image's own pixels.

The two lungs: the mask's two largest connected components (8-connected), the one on the
image's left being the patient's RIGHT lung (frontal films are viewed as if facing the
patient); smaller pieces go to the side of the cut between them. When the lungs touch (one
component), the cut is the column with the fewest lung pixels in the middle 60% of the
mask's width. Zones (the paper: "bounding boxes for six lung zones ... from the Chest
Imagenome dataset"): ``zone_{side}_{upper,mid,lower}`` = that side's lung mask inside the
box of ImaGenome's ``{side} {upper,mid,lower} lung zone``.

Records: the frontal MIMIC-CXR images that have a lung mask (and, with ImaGenome, all six
zone boxes; the others are dropped and counted in ``df.attrs["no_zone_boxes"]``). Splits are
70/15/15 by subject, seeded (the paper's segmentation split; MIMIC-CXR's official split is
not used). Only the images named by a mask file are read from MIMIC-CXR's tables or looked
for on disk, so the lung-mask subset of MIMIC-CXR-JPG is all that needs downloading.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from raddino_lib.data import schema
from raddino_lib.data.adapters import mimic_cxr
from raddino_lib.data.adapters._common import (
    AdapterError,
    finish,
    image_size,
    split_subjects,
    write_records,
)
from raddino_lib.data.io import write_masks

MASKS_FOLDER = "lung-segment-mimic-cxr"
IMAGENOME_FOLDER = "chest-imagenome"
MASK_SUFFIXES: tuple[str, ...] = ("", "_mask", "-mask", "_lung", "_lungs", "_seg")
MASK_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")
SCENE_GRAPH_SUFFIX = "_SceneGraph.json"
LEVELS: tuple[str, ...] = ("upper", "mid", "lower")
#: zone mask name -> Chest ImaGenome bbox_name
ZONE_BOXES: dict[str, str] = {
    f"zone_{side}_{level}": f"{side} {level} lung zone"
    for side in ("right", "left")
    for level in LEVELS
}
assert tuple(ZONE_BOXES) == schema.ZONE_MASKS


def _index(folder: Path, keep) -> dict[str, list[Path]]:
    """Lower-cased file name -> paths below ``folder`` (sorted walk) for names ``keep`` accepts."""
    out: dict[str, list[Path]] = {}
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        for f in sorted(files):
            if keep(f):
                out.setdefault(f.lower(), []).append(Path(root, f))
    return out


def mask_index(masks_dir: Path) -> dict[str, list[Path]]:
    """Lower-cased file name -> paths of every PNG/JPEG below ``masks_dir``."""
    if not masks_dir.is_dir():
        raise AdapterError(
            f"{masks_dir}: lung-mask folder not found (put or symlink the lung-segment-mimic-cxr "
            "release there, or pass masks_dir)"
        )
    return _index(masks_dir, lambda f: f.lower().endswith(MASK_EXTENSIONS))


def candidate_ids(index: dict[str, list[Path]]) -> set[str]:
    """Every dicom_id (lower-cased) that a mask file name could stand for."""
    out = set()
    for name in index:
        stem = name.rsplit(".", 1)[0]
        out.update(stem[: len(stem) - len(s)] for s in MASK_SUFFIXES if stem.endswith(s))
    return out


def mask_files(
    masks_dir: Path, dicom_ids: list[str], index: dict[str, list[Path]] | None = None
) -> dict[str, Path]:
    """dicom_id -> its lung-mask file (see the module doc for the naming).

    Raises:
        AdapterError: a dicom_id matches two files, or no dicom_id matches any file (the
            message shows a few of the names found, so a different naming is easy to see).
    """
    index = mask_index(masks_dir) if index is None else index
    out: dict[str, Path] = {}
    for did in dicom_ids:
        hits = [p for s in MASK_SUFFIXES for e in MASK_EXTENSIONS
                for p in index.get(f"{did}{s}{e}".lower(), [])]  # fmt: skip
        if len(hits) > 1:
            raise AdapterError(
                f"{masks_dir}: image {did!r} has {len(hits)} mask files "
                f"({', '.join(str(h) for h in hits[:3])}); keep one"
            )
        if hits:
            out[did] = hits[0]
    if not out:
        seen = sorted(index)[:5]
        raise AdapterError(
            f"{masks_dir}: no mask file named after a MIMIC-CXR dicom_id "
            f"({{dicom_id}}{{{'|'.join(MASK_SUFFIXES)}}}.png/.jpg); found e.g. {seen or 'nothing'}"
        )
    return out


def read_lung_mask(path: Path, threshold: float = 0.0) -> np.ndarray:
    """A lung-mask image -> ``(H, W)`` bool: pixels above ``threshold`` (in the file's own
    grey units, after flattening colour to grey).

    Raises:
        AdapterError: naming the file, when it cannot be read or holds no lung pixel.
    """
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im if im.mode in ("L", "I", "I;16", "F", "1") else im.convert("L"))
    except Exception as e:  # noqa: BLE001
        raise AdapterError(f"{path}: cannot read the lung mask ({type(e).__name__}: {e})") from None
    mask = arr.astype(np.float64) > threshold
    if not mask.any():
        raise AdapterError(f"{path}: the lung mask is empty (no pixel above {threshold})")
    return mask


def split_lungs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W)`` bool lung mask -> (patient's right lung, patient's left lung), each
    ``(H, W)`` bool; the right lung is on the image's left (see the module doc)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    cols = np.flatnonzero(mask.any(axis=0))
    if n >= 2:
        sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
        a, b = (np.argsort(sizes)[::-1][:2] + 1).tolist()
        if sizes[b - 1] >= 0.1 * sizes[a - 1]:
            xa = np.flatnonzero((labels == a).any(axis=0))
            xb = np.flatnonzero((labels == b).any(axis=0))
            first, second = (xa, xb) if xa.mean() < xb.mean() else (xb, xa)
            right_id, left_id = (a, b) if xa.mean() < xb.mean() else (b, a)
            cut = (first.max() + second.min() + 1) / 2
            xx = np.arange(mask.shape[1])[None, :]
            right = (labels == right_id) | (mask & (labels != left_id) & (xx < cut))
            left = (labels == left_id) | (mask & (labels != right_id) & (xx >= cut))
            return right, left
    lo, hi = cols.min(), cols.max()
    inner = np.arange(lo + int(0.2 * (hi - lo + 1)), hi - int(0.2 * (hi - lo + 1)) + 1)
    counts = mask[:, inner].sum(axis=0)
    cut = int(inner[np.argmin(counts)]) if len(inner) else (lo + hi) // 2
    xx = np.arange(mask.shape[1])[None, :]
    return mask & (xx < cut), mask & (xx >= cut)


def zone_boxes(path: Path) -> dict[str, tuple[float, float, float, float]]:
    """A Chest ImaGenome scene graph -> ``{zone mask name: (x1, y1, x2, y2)}`` in the image's
    own pixels, for the lung-zone boxes it has (only these keys are read).

    Raises:
        AdapterError: naming the file, when it is not JSON with an ``objects`` list or a box
            coordinate is not a number.
    """
    try:
        data = json.loads(path.read_text())
        objects = data["objects"]
        if not isinstance(objects, list):
            raise TypeError("'objects' is not a list")
    except Exception as e:  # noqa: BLE001
        raise AdapterError(
            f"{path}: not a Chest ImaGenome scene graph ({type(e).__name__}: {e})"
        ) from None
    wanted = {v: k for k, v in ZONE_BOXES.items()}
    out = {}
    for obj in objects:
        name = str(obj.get("bbox_name", "")).strip().lower() if isinstance(obj, dict) else ""
        if name in wanted:
            try:
                box = tuple(float(obj[f"original_{c}"]) for c in ("x1", "y1", "x2", "y2"))
            except (KeyError, TypeError, ValueError):
                raise AdapterError(
                    f"{path}: box {name!r} lacks numeric original_x1/y1/x2/y2"
                ) from None
            out[wanted[name]] = box
    return out


def zone_masks(
    right: np.ndarray, left: np.ndarray, boxes: dict[str, tuple[float, float, float, float]]
) -> dict[str, np.ndarray]:
    """Each zone = its side's lung inside its box (pixel centres inside ``[x1, x2) x [y1, y2)``,
    boxes clipped to the image)."""
    h, w = right.shape
    out = {}
    for name, (x1, y1, x2, y2) in boxes.items():
        box = np.zeros((h, w), dtype=bool)
        c0, c1 = max(0, int(np.ceil(x1 - 0.5))), min(w, int(np.ceil(x2 - 0.5)))
        r0, r1 = max(0, int(np.ceil(y1 - 0.5))), min(h, int(np.ceil(y2 - 0.5)))
        box[r0:r1, c0:c1] = True
        out[name] = box & (right if name.startswith("zone_right") else left)
    return out


def _default_dirs(src: Path, masks_dir, imagenome_dir) -> tuple[Path, Path | None]:
    masks = Path(masks_dir) if masks_dir is not None else src / MASKS_FOLDER
    if imagenome_dir is None and (src / IMAGENOME_FOLDER).is_dir():
        imagenome_dir = src / IMAGENOME_FOLDER
    return masks, (Path(imagenome_dir) if imagenome_dir is not None else None)


def _build(src: Path, seed: int, skip_bad: bool, masks_dir, imagenome_dir, **mimic_kw: Any):
    masks_root, ig_root = _default_dirs(src, masks_dir, imagenome_dir)
    index = mask_index(masks_root)
    base = mimic_cxr.build_records(src, skip_bad=skip_bad, only=candidate_ids(index), **mimic_kw)
    frontal = base[base["view"] != "LATERAL"]
    files = mask_files(masks_root, frontal["image_id"].tolist(), index)
    df = frontal[frontal["image_id"].isin(files)].copy()
    boxes: dict[str, dict] = {}
    no_boxes = 0
    if ig_root is not None:
        if not ig_root.is_dir():
            raise AdapterError(f"{ig_root}: Chest ImaGenome folder not found")
        graphs = _index(ig_root, lambda f: f.endswith(SCENE_GRAPH_SUFFIX))
        keep = []
        for did in df["image_id"]:
            paths = graphs.get(f"{did}{SCENE_GRAPH_SUFFIX}".lower(), [])
            b = zone_boxes(paths[0]) if paths else {}
            if len(b) == len(ZONE_BOXES):
                boxes[did] = b
            keep.append(len(b) == len(ZONE_BOXES))
        no_boxes = int(len(keep) - sum(keep))
        df = df[np.array(keep, dtype=bool)]
        if df.empty:
            raise AdapterError(
                f"{ig_root}: no image with a lung mask has all six lung-zone boxes "
                f"({{dicom_id}}{SCENE_GRAPH_SUFFIX} scene graphs)"
            )
    split = split_subjects(df["subject_id"].tolist(), seed)
    df["split"] = df["subject_id"].map(split)
    out = finish(df, source=str(src), skipped=int(base.attrs.get("skipped", 0)))
    out.attrs.update({k: v for k, v in base.attrs.items() if k not in ("skipped", "source")})
    out.attrs.update(no_zone_boxes=no_boxes)
    return out, files, boxes


def build_records(
    src_dir: str | Path,
    *,
    seed: int = 0,
    skip_bad: bool = False,
    masks_dir: str | Path | None = None,
    imagenome_dir: str | Path | None = None,
    **mimic_kw: Any,
) -> pd.DataFrame:
    """MIMIC-CXR-JPG folder + lung masks (+ ImaGenome) -> records (schema.RECORD_COLUMNS,
    no masks written). ``mimic_kw`` go to :func:`raddino_lib.data.adapters.mimic_cxr.
    build_records` (labeler, reports_dir, mimic_iv_dir, ...)."""
    return _build(Path(src_dir), seed, skip_bad, masks_dir, imagenome_dir, **mimic_kw)[0]


def write_dataset(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    link: str = "symlink",
    seed: int = 0,
    skip_bad: bool = False,
    masks_dir: str | Path | None = None,
    imagenome_dir: str | Path | None = None,
    mask_threshold: float = 0.0,
    **mimic_kw: Any,
) -> pd.DataFrame:
    """Records + ``out_dir/masks/{image_id}.npz`` (``lung_right``, ``lung_left`` and, with
    ImaGenome, the six ``zone_*`` masks, at the JPEG's size) + records.csv."""
    src, out = Path(src_dir), Path(out_dir)
    df, files, boxes = _build(src, seed, skip_bad, masks_dir, imagenome_dir, **mimic_kw)
    paths = []
    for did, p in zip(df["image_id"], df["path"], strict=True):
        w, h = image_size(src / p)
        lung = read_lung_mask(files[did], mask_threshold)
        if lung.shape != (h, w):
            lung = np.asarray(Image.fromarray(lung).resize((w, h), Image.NEAREST), dtype=bool)
        right, left = split_lungs(lung)
        masks = {"lung_right": right, "lung_left": left}
        if did in boxes:
            masks.update(zone_masks(right, left, boxes[did]))
        rel = f"masks/{did}.npz"
        write_masks(out / rel, masks)
        paths.append(rel)
    df["mask_path"] = paths
    write_records(df, src, out, link=link)
    return df
