"""Whole datasets as arrays: images downsampled to a side, cached on disk as ``.npy``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
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


def content_key(root: str | Path, paths: Sequence[str]) -> str:
    """Hash of a dataset's rows by content, not location: the folder's ``records.csv`` and
    ``dataset.json`` (where present), and each row's path (relative to ``root``) and file size.

    A dataset folder copied or moved with its cache keeps its keys (the absolute path was in
    them before, so a copied cache recomputed every embedding and report generator); another
    ``records.csv``, another row set, or an image rewritten at another size changes them."""
    root = Path(root)
    h = hashlib.sha256(b"content-key-1")
    for name in ("records.csv", "dataset.json"):
        f = root / name
        h.update(name.encode() + b"\0")
        if f.is_file():
            h.update(hashlib.sha256(f.read_bytes()).digest())
    for p in paths:
        try:
            size = (root / p).stat().st_size
        except OSError:
            size = -1  # missing: reading it raises with the file's name
        h.update(f"{p}\0{size}\0".encode())
    return h.hexdigest()


def _key(root: Path, paths: list[str], size: int) -> str:
    return hashlib.sha256(f"{content_key(root, paths)}|{size}".encode()).hexdigest()[:16]


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
