"""Embedding cache: every (encoder, dataset rows, resolution, preprocessing, features) once.

Chapters ask :func:`cached_embeddings` for the frozen features of a set of records; the first
call computes them (batched, bf16 where supported, progress bar) and stores them as one
``.safetensors`` file under ``.cache/embeddings``; later calls, from any chapter, load it.

The file name is a hash of the key; the key itself (encoder weights hash, backend,
preprocessing, dataset folder and the exact rows, precision, pooled grid, layers) and a
SHA-256 of the arrays are stored in the file's metadata and checked on load. A file whose
key differs, that cannot be parsed (truncated, overwritten) or whose checksum fails is
reported with a :class:`CacheRebuildWarning` and rebuilt; a reader never sees a half-written
file (atomic rename).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raddino_lib.atomic import atomic_save
from raddino_lib.data.arrays import content_key, image_array
from raddino_lib.eval.embed import embed_array
from raddino_lib.models.registry import Encoder, load_encoder
from raddino_lib.paths import cache_dir

__all__ = [
    "CACHE_VERSION",
    "CacheRebuildWarning",
    "array_digest",
    "cache_file",
    "cached_embeddings",
    "dataset_key",
    "embedding_key",
]

# Bump when what embed_array computes changes (invalidates every cached embedding).
# 2: bf16 runs a copy with bf16 parameters (not fp32 ones under autocast), blocked attention
# 3: that copy's linear layers run oneDNN on packed weights, bias and MLP GELU fused
# (models.packed). Caches of models trained on embeddings (seg.cache, report generators) key on
# this version too.
CACHE_VERSION = "3"


class CacheRebuildWarning(UserWarning):
    """A cached embedding file was unreadable or did not match its key and was rebuilt."""


def dataset_key(root: str | Path, records: pd.DataFrame) -> str:
    """Hash of the selected rows of a dataset folder by content, not location
    (:func:`~raddino_lib.data.arrays.content_key`: ``records.csv``, ``dataset.json``, each
    row's path and file size)."""
    return content_key(root, records["path"].astype(str).tolist())[:20]


def embedding_key(
    encoder: Encoder,
    root: str | Path,
    records: pd.DataFrame,
    *,
    grid: int,
    layers: Sequence[int],
    precision: str,
) -> dict[str, Any]:
    """The cache key: everything that changes the stored arrays."""
    return {
        "version": CACHE_VERSION,
        "encoder": encoder.identity(),
        "kind": encoder.kind,
        "preprocess": encoder.preprocess.to_dict(),
        "dataset": dataset_key(root, records),
        "n": len(records),
        "grid": int(grid),
        "layers": [int(i) for i in layers],
        "precision": precision,
    }


def cache_file(key: dict[str, Any], folder: str = "embeddings") -> Path:
    """Where the arrays of ``key`` live under ``<cache>/<folder>`` (may not exist yet): a
    ``.safetensors`` file named by a hash of the key."""
    blob = json.dumps(key, sort_keys=True).encode()
    return cache_dir(folder, f"{hashlib.sha256(blob).hexdigest()[:24]}.safetensors")


def array_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over named arrays (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _read(path: Path, key: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The arrays of ``path`` if it is intact and holds ``key``; else warn and return None."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        problem = f"unreadable ({exc.__class__.__name__}: {exc})"
    else:
        if json.loads(meta.get("key", "null")) != key:
            problem = "its stored key differs from the requested one"
        elif meta.get("sha256") != array_digest(arrays):
            problem = "its checksum does not match its contents"
        elif any(len(a) != key["n"] for a in arrays.values()):
            problem = "its arrays do not have one row per record"
        else:
            return arrays
    warnings.warn(
        f"embedding cache {path}: {problem}; recomputing it", CacheRebuildWarning, stacklevel=3
    )
    return None


def cached_embeddings(
    encoder: Encoder | Any,
    root: str | Path,
    records: pd.DataFrame,
    *,
    grid: int = 0,
    layers: Sequence[int] = (),
    batch_size: int = 256,
    device: str = "cpu",
    precision: str = "auto",
    progress: bool = True,
    cache: bool = True,
) -> dict[str, np.ndarray]:
    """Frozen embeddings of ``records`` (rows of ``root/records.csv``), cached.

    Images are read at the encoder's input side (area downsampling, cached too), then
    :func:`raddino_lib.eval.embed.embed_array` applies the encoder's own preprocessing.

    Args:
        encoder: an :class:`~raddino_lib.models.registry.Encoder` or anything
            :func:`~raddino_lib.models.registry.load_encoder` accepts.
        grid: also store patch tokens pooled to ``grid x grid`` (``"grid"`` array).
        layers: also store these blocks' full patch grids (``"layer_<i>"``, float16).
        cache: False computes without reading or writing the cache (the image array's
            neither) and without hashing the weights for a key.

    Returns:
        the arrays of :func:`~raddino_lib.eval.embed.embed_array`, one row per record.
    """
    import torch

    from raddino_lib.ssl.train import resolve_precision

    enc = load_encoder(encoder)
    prec = resolve_precision(precision, torch.device(device))
    if cache:  # the key hashes the weights (ViT-B/14: 0.35 s a new encoder) and the rows
        key = embedding_key(enc, root, records, grid=grid, layers=layers, precision=prec)
        path = cache_file(key)
        if path.is_file():
            got = _read(path, key)
            if got is not None:
                return got
    images = image_array(root, records, enc.preprocess.image_size, cache=cache, progress=progress)
    arrays = embed_array(
        enc, images, batch_size=batch_size, device=device, precision=prec, grid=grid,
        layers=layers, progress=progress,
    )  # fmt: skip
    if cache:
        from safetensors.numpy import save_file

        meta = {"key": json.dumps(key, sort_keys=True), "sha256": array_digest(arrays)}
        atomic_save(
            path,
            lambda t: save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                                str(t), metadata=meta),
            suffix=".safetensors",
        )  # fmt: skip
    return arrays
