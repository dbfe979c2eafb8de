"""Whole datasets as arrays: images downsampled to a side, cached on disk as ``.npy``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from raddino_lib.atomic import atomic_save
from raddino_lib.paths import cache_dir


def resize_area(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a ``[H, W]`` float image to ``[size, size]`` with area averaging (box filter)."""
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {img.shape}")
    pil = Image.fromarray(np.asarray(img, dtype=np.float32), mode="F")
    return np.asarray(pil.resize((size, size), Image.Resampling.BOX), dtype=np.float32)


def _key(root: Path, paths: list[str], size: int) -> str:
    h = hashlib.sha256()
    rec = root / "records.csv"
    h.update(str(root.resolve()).encode())
    h.update(str(rec.stat().st_mtime_ns if rec.exists() else 0).encode())
    h.update(str(size).encode())
    for p in paths:
        h.update(p.encode())
    return h.hexdigest()[:16]


def image_array(
    root: str | Path, records: pd.DataFrame, size: int, *, cache: bool = True, progress: bool = True
) -> np.ndarray:
    """Images of ``records`` (rows of ``records.csv`` under ``root``) as ``[N, size, size]``
    float32 in [0, 1], area-downsampled; cached under ``.cache/arrays`` keyed by the rows."""
    from raddino_lib.data.records import load_image

    root = Path(root)
    paths = [str(p) for p in records["path"]]
    target = cache_dir("arrays", f"{_key(root, paths, size)}.npy")
    if cache and target.is_file():
        arr = np.load(target, allow_pickle=False)
        if arr.shape == (len(paths), size, size):
            return arr
    out = np.empty((len(paths), size, size), dtype=np.float32)
    for i, p in enumerate(tqdm(paths, desc=f"load {size}px", disable=not progress, leave=False)):
        out[i] = resize_area(load_image(root, p), size)
    if cache:
        atomic_save(target, lambda t: np.save(t, out, allow_pickle=False), suffix=".npy")
    return out
