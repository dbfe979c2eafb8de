"""Chapter 6's U-Net in a side process while the frozen-encoder heads train in the notebook.

The end-to-end U-Net needs none of the encoders, so on a CPU where
:func:`~raddino_lib.lanes.lanes_for` allows two runs at a time it trains beside the heads: the
views it trains on (images, masks packed to bits, splits) and the keys of its models are
written to ``<cache>/seg/unet-<views hash>.inputs``, a side process
(:mod:`raddino_lib.lanes`, kind ``"seg_unet"``) trains each model and stores its scores in the
segmentation cache under its key (:func:`~raddino_lib.seg.cache.save_model_scores`), and
:func:`~raddino_lib.seg.experiment.run_segmentation` reads them from there. The notebook's
process runs on the remaining cores meanwhile and takes them all back when the side process
ends. The models are those the notebook would have trained (same views, seeds and steps); only
their thread count differs.

* :func:`write_unet_inputs` / :func:`train_unets_from_inputs` -- the two halves;
* :func:`start_unet_side` -- write the inputs and start the side process.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raddino_lib.atomic import atomic_dir, atomic_write_text
from raddino_lib.config import Config
from raddino_lib.paths import cache_dir
from raddino_lib.seg.cache import load_model_scores, save_model_scores, views_key
from raddino_lib.seg.data import SegViews

__all__ = ["start_unet_side", "train_unets_from_inputs", "unet_inputs_dir", "write_unet_inputs"]


def unet_inputs_dir(views: SegViews) -> Path:
    """``<cache>/seg/unet-<views hash>.inputs``: where the side process's inputs go."""
    return cache_dir("seg", f"unet-{views_key(views)}.inputs")


def write_unet_inputs(
    folder: Path,
    views: SegViews,
    models: Sequence[tuple[Sequence[str], dict[str, Any]]],
    example_rows: np.ndarray | None,
) -> Path:
    """Write ``views`` (``images [M, S, S]`` float32, ``masks [M, C, S, S]`` packed to bits,
    split, source, view, channels) and ``models``: ``(task group, cache key)`` pairs, to
    ``folder`` atomically (an earlier set there is replaced)."""
    with atomic_dir(folder) as tmp:
        np.save(tmp / "images.npy", np.ascontiguousarray(views.images, dtype=np.float32))
        np.save(tmp / "masks.npy", np.packbits(np.ascontiguousarray(views.masks), axis=-1))
        np.save(tmp / "split.npy", np.asarray(views.split).astype(str))
        np.save(tmp / "source.npy", np.asarray(views.source, dtype=np.int64))
        np.save(tmp / "view.npy", np.asarray(views.view, dtype=np.int64))
        spec = {
            "channels": list(views.channels),
            "mask_shape": list(views.masks.shape),
            "example_rows": None if example_rows is None else np.asarray(example_rows).tolist(),
            "models": [{"tasks": list(g), "key": k} for g, k in models],
        }
        atomic_write_text(tmp / "spec.json", json.dumps(spec))
    return Path(folder)


def read_unet_views(folder: Path) -> SegViews:
    """The :class:`SegViews` written by :func:`write_unet_inputs` (``records`` empty)."""
    folder = Path(folder)
    spec = json.loads((folder / "spec.json").read_text())
    shape = tuple(spec["mask_shape"])
    masks = np.unpackbits(np.load(folder / "masks.npy"), axis=-1, count=shape[-1]).astype(bool)
    if masks.shape != shape:
        raise ValueError(f"{folder / 'masks.npy'} unpacks to {masks.shape}, expected {shape}")
    return SegViews(
        images=np.load(folder / "images.npy"),
        masks=masks,
        split=np.load(folder / "split.npy"),
        source=np.load(folder / "source.npy"),
        view=np.load(folder / "view.npy"),
        channels=tuple(spec["channels"]),
        records=pd.DataFrame(),
    )


def train_unets_from_inputs(folder: Path, cfg: Config) -> None:
    """Train every model of ``folder``'s inputs that is not cached yet, store its scores
    under its key, then write ``done.json`` there.

    Raises:
        FileNotFoundError: no inputs in ``folder``.
    """
    from raddino_lib.lanes import read_inputs_spec
    from raddino_lib.seg.experiment import _train_unet

    folder = Path(folder)
    spec = read_inputs_spec(folder / "spec.json", "write_unet_inputs")
    views = read_unet_views(folder)
    ex = spec["example_rows"]
    ex = None if ex is None else np.asarray(ex, dtype=np.int64)
    for m in spec["models"]:
        if load_model_scores(m["key"]) is None:
            out = _train_unet(views, m["tasks"], cfg, example_rows=ex)
            out[1]["side_process"] = True
            save_model_scores(m["key"], out)
    atomic_write_text(folder / "done.json", json.dumps({"models": len(spec["models"])}))


def start_unet_side(
    cfg: Config,
    views: SegViews,
    models: Sequence[tuple[Sequence[str], dict[str, Any]]],
    example_rows: np.ndarray | None,
    steps: int,
) -> Any:
    """Write the inputs of the U-Net ``models`` not cached yet and start one side process on
    one thread to train them (a :class:`~raddino_lib.lanes.SideRuns`); None when all are
    cached. The caller runs on the other cores meanwhile (see the module docstring)."""
    from raddino_lib.lanes import Job, SideRuns

    todo = [(g, k) for g, k in models if load_model_scores(k) is None]
    if not todo:
        return None
    folder = unet_inputs_dir(views)
    write_unet_inputs(folder, views, todo, example_rows)
    job = Job("seg_unet", cfg, folder, n_steps=steps * len(todo))
    return SideRuns([job], processes=1, threads=1)


def remove_unet_inputs(views: SegViews) -> None:
    """Delete the side process's inputs (they are only needed while it trains)."""
    shutil.rmtree(unet_inputs_dir(views), ignore_errors=True)
