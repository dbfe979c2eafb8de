"""Trained segmentation models, cached by key: a warm rerun of chapter 6 trains nothing.

One file per trained model (a frozen-encoder head on one task group, a few-shot point or the
U-Net) under ``<cache>/seg``: its test scores (per-task Dice summaries), per-image Dice, the
predictions on the example rows and the training info, as one ``.safetensors`` file whose
metadata holds the key and a SHA-256 of the arrays. The key is everything that changes those
numbers: the encoder's weights hash, the head and tasks, the blocks read, the training rows
(few-shot subsets), the example rows, a hash of the views (images, masks, splits), every
``seg_*`` field of the config, the seed, device kind and precision, and
:data:`SEG_CACHE_VERSION`. A file that does not match its key or fails its checksum is
reported with a :class:`SegCacheRebuildWarning` and retrained; writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from raddino_lib.atomic import atomic_save
from raddino_lib.config import Config
from raddino_lib.eval.cache import CACHE_VERSION as EMBEDDING_VERSION
from raddino_lib.eval.cache import array_digest, cache_file

__all__ = [
    "SEG_CACHE_VERSION",
    "SegCacheRebuildWarning",
    "load_model_scores",
    "model_key",
    "save_model_scores",
    "views_key",
]

# Bump when training, prediction or scoring of a segmentation model changes its numbers.
SEG_CACHE_VERSION = "1"

#: ``(scores {task: (summary dict, [N_test] per-image Dice)}, info dict, examples or None)``
ModelScores = tuple[dict[str, tuple[dict[str, Any], np.ndarray]], dict[str, Any], Any]


class SegCacheRebuildWarning(UserWarning):
    """A cached segmentation model's scores were unreadable or did not match; retrained."""


def views_key(views: Any) -> str:
    """Hash of a :class:`~raddino_lib.seg.data.SegViews`' images, masks, splits, sources and
    channel names (memoised on the object: the arrays are not meant to change)."""
    got = getattr(views, "_cache_key", None)
    if got is not None:
        return got
    h = hashlib.sha256()
    for a in (views.images, views.masks, views.split.astype(str), views.source, views.view):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    h.update(json.dumps(list(views.channels)).encode())
    key = h.hexdigest()[:24]
    object.__setattr__(views, "_cache_key", key)
    return key


def model_key(
    cfg: Config,
    views: Any,
    *,
    encoder: str,
    head: str,
    tasks: Sequence[str],
    layers: Sequence[int] = (),
    sources: np.ndarray | None = None,
    example_rows: np.ndarray | None = None,
    device: str,
    precision: str,
    pixel_stats: bool = False,
) -> dict[str, Any]:
    """The cache key of one trained model. ``encoder``: the encoder's weights hash (the
    U-Net: its name); ``sources``: the training subset (None: all training rows);
    ``pixel_stats``: the model normalises raw images itself (the U-Net), so the config's
    pixel mean and std belong to its key."""
    seg = {k: v for k, v in cfg.to_dict().items() if k.startswith("seg_") and k != "seg_cache"}
    return {
        "version": SEG_CACHE_VERSION,
        "embedding_version": EMBEDDING_VERSION,  # the encoders' features come from embed_array
        "encoder": encoder,
        "head": head,
        "tasks": list(tasks),
        "layers": [int(i) for i in layers],
        "sources": None if sources is None else np.asarray(sources).astype(int).tolist(),
        "examples": None if example_rows is None else np.asarray(example_rows).astype(int).tolist(),
        "views": views_key(views),
        "seg": seg,
        "seed": int(cfg.seed),
        "pixel": [float(cfg.pixel_mean), float(cfg.pixel_std)] if pixel_stats else None,
        "device": device,
        "precision": precision,
    }


def save_model_scores(key: dict[str, Any], out: ModelScores) -> Path:
    """Store one trained model's :data:`ModelScores` under ``key`` (atomically)."""
    from safetensors.numpy import save_file

    scores, info, ex = out
    arrays = {
        f"dice.{t}": np.ascontiguousarray(pi, dtype=np.float64) for t, (_, pi) in scores.items()
    }
    if ex is not None:
        arrays["examples"] = np.ascontiguousarray(ex, dtype=np.uint8)
    meta = {
        "key": json.dumps(key, sort_keys=True),
        "summaries": json.dumps({t: s for t, (s, _) in scores.items()}),
        "tasks": json.dumps(list(scores)),
        "info": json.dumps(info),
        "sha256": array_digest(arrays),
    }
    path = cache_file(key, "seg")
    atomic_save(path, lambda t: save_file(arrays, str(t), metadata=meta), suffix=".safetensors")
    return path


def load_model_scores(key: dict[str, Any]) -> ModelScores | None:
    """The stored :data:`ModelScores` of ``key`` (``info["cached"]`` set), or None when
    there is none or it is unusable (then with a :class:`SegCacheRebuildWarning`)."""
    from safetensors import safe_open

    path = cache_file(key, "seg")
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        stored_key = json.loads(meta.get("key", "null"))
        summaries = json.loads(meta["summaries"])
        tasks = json.loads(meta["tasks"])
        info = json.loads(meta["info"])
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        problem = f"unreadable ({exc.__class__.__name__}: {exc})"
    else:
        if stored_key != key:
            problem = "its stored key differs from the requested one"
        elif meta.get("sha256") != array_digest(arrays):
            problem = "its checksum does not match its contents"
        elif any(f"dice.{t}" not in arrays or t not in summaries for t in tasks):
            problem = "it lacks the scores of a task it names"
        else:
            scores = {t: (summaries[t], arrays[f"dice.{t}"]) for t in tasks}
            ex = arrays["examples"].astype(bool) if "examples" in arrays else None
            return scores, {**info, "cached": True}, ex
    warnings.warn(
        f"segmentation cache {path}: {problem}; training the model again",
        SegCacheRebuildWarning,
        stacklevel=2,
    )
    return None
