"""Patch-embedding correspondences (Figures 3, A.3, A.4) turned into a measurement.

For a landmark on a query image, the query patch that holds it is compared (cosine
similarity of frozen patch embeddings) with every patch of a target image; the centre of the
most similar target patch is the predicted position, and its distance to the target's true
landmark is the error. The phantom knows its landmarks
(:mod:`raddino_lib.data.phantom.landmarks`), so this runs over many image pairs and gives
per-encoder, per-landmark error statistics: a number the paper does not have.

Coordinates are pixels of the stored image (``x`` = column, ``y`` = row, continuous, the
image spans ``[0, S]``); a patch grid ``h x w`` tiles that square evenly. Two reference rows
come with every measurement:

* *same position*: the target patch at the query landmark's position (no features at all;
  strong on roughly aligned radiographs, so an encoder has to beat it to show anything);
* *random patch*: the mean distance from the true landmark to all patch centres.

The *grid floor* (distance from the true landmark to the centre of its own patch) is the
best any patch-level match can do.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "PIXEL_PATCHES",
    "at_side",
    "pixel_patch_grid",
    "side_agreement",
    "SAME_POSITION",
    "RANDOM_PATCH",
    "compare_medians",
    "landmark_errors",
    "measure_correspondences",
    "patch_grids",
    "patch_centre",
    "patch_index",
    "pick_examples",
    "sample_pairs",
    "similarity_maps",
    "summarize_errors",
]

SAME_POSITION = "same position (no features)"
RANDOM_PATCH = "random patch"
PIXEL_PATCHES = "raw pixel patches"


def patch_index(xy: np.ndarray, size: float, grid: tuple[int, int]) -> np.ndarray:
    """Patch ``(row, col)`` that holds each point.

    Args:
        xy: ``[..., 2]`` pixel coordinates (x, y) in an image of side ``size``.
        grid: ``(h, w)`` patches.

    Returns:
        ``[..., 2]`` int ``(row, col)``, clipped to the grid.
    """
    xy = np.asarray(xy, dtype=float)
    h, w = grid
    col = np.clip(np.floor(xy[..., 0] / size * w), 0, w - 1)
    row = np.clip(np.floor(xy[..., 1] / size * h), 0, h - 1)
    return np.stack([row, col], -1).astype(int)


def patch_centre(rc: np.ndarray, size: float, grid: tuple[int, int]) -> np.ndarray:
    """Pixel centre ``(x, y)`` ``[..., 2]`` of patches ``(row, col)`` ``[..., 2]``."""
    rc = np.asarray(rc, dtype=float)
    h, w = grid
    return np.stack([(rc[..., 1] + 0.5) * size / w, (rc[..., 0] + 0.5) * size / h], -1)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def similarity_maps(query: np.ndarray, rc: Sequence[int], targets: np.ndarray) -> np.ndarray:
    """Cosine similarity of the query patch ``rc`` with every patch of each target.

    Args:
        query: ``[h, w, D]`` patch embeddings of the query image.
        rc: ``(row, col)`` of the query patch.
        targets: ``[T, h', w', D]`` (or one ``[h', w', D]``) patch embeddings.

    Returns:
        ``[T, h', w']`` (``[h', w']`` for one target) in ``[-1, 1]``.
    """
    one = targets.ndim == 3
    t = targets[None] if one else targets
    if query.ndim != 3 or t.ndim != 4 or t.shape[-1] != query.shape[-1]:
        raise ValueError(
            f"query must be [h, w, D] and targets [T, h, w, D] with the same D; got "
            f"{query.shape} and {targets.shape}"
        )
    q = _unit(query[int(rc[0]), int(rc[1])])
    sims = _unit(t) @ q
    return sims[0] if one else sims


def sample_pairs(
    records: pd.DataFrame, n_pairs: int, *, seed: int = 0, group: str = "subject_id"
) -> np.ndarray:
    """``[P, 2]`` positional indices (query, target) into ``records``, different subjects.

    Drawn without repeating a pair; fewer than ``n_pairs`` only when the records cannot make
    that many.
    """
    n = len(records)
    if n < 2:
        raise ValueError(f"need at least two images to make pairs, got {n}")
    groups = records[group].to_numpy() if group in records else np.arange(n)
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    tries = 0
    while len(out) < n_pairs and tries < 50 * n_pairs:
        tries += 1
        i, j = (int(v) for v in rng.choice(n, 2, replace=False))
        if groups[i] == groups[j] or (i, j) in seen:
            continue
        seen.add((i, j))
        out.append((i, j))
    return np.array(out, dtype=int).reshape(-1, 2)


def landmark_errors(
    patches: np.ndarray,
    landmarks: pd.DataFrame,
    names: Sequence[str],
    pairs: np.ndarray,
    size: float,
    *,
    encoder: str = "encoder",
    references: bool = True,
) -> pd.DataFrame:
    """Best-match error of every landmark over every pair.

    Args:
        patches: ``[N, h, w, D]`` patch embeddings, row ``i`` = ``landmarks.iloc[i]``.
        landmarks: ``N`` rows with ``<name>_x`` / ``<name>_y`` pixel columns (NaN: absent).
        names: landmark names.
        pairs: ``[P, 2]`` positional (query, target) indices.
        size: side of the stored image the landmark pixels refer to.
        encoder: label of the ``encoder`` column.
        references: also return the *same position* and *random patch* rows.

    Returns:
        long frame: ``encoder, pair, query, target, landmark, error_px, floor_px`` plus the
        best match ``row, col`` and its similarity ``sim``; the references carry their own
        ``encoder`` label and NaN similarity.
    """
    if patches.ndim != 4 or len(patches) != len(landmarks):
        raise ValueError(
            f"patches must be [N, h, w, D] with N = {len(landmarks)} landmark rows, got "
            f"{patches.shape}"
        )
    n, h, w, _ = patches.shape
    grid = (h, w)
    unit = _unit(patches.reshape(n, h * w, -1))
    centres = patch_centre(np.stack(np.divmod(np.arange(h * w), w), -1), size, grid)  # [hw, 2]
    rows: list[dict] = []
    for p, (qi, ti) in enumerate(np.asarray(pairs, dtype=int)):
        for name in names:
            q_xy = landmarks.iloc[qi][[f"{name}_x", f"{name}_y"]].to_numpy(float)
            t_xy = landmarks.iloc[ti][[f"{name}_x", f"{name}_y"]].to_numpy(float)
            if not (np.isfinite(q_xy).all() and np.isfinite(t_xy).all()):
                continue
            r, c = patch_index(q_xy, size, grid)
            sims = unit[ti] @ unit[qi, r * w + c]
            best = int(np.argmax(sims))
            err = float(np.hypot(*(centres[best] - t_xy)))
            own = patch_centre(patch_index(t_xy, size, grid), size, grid)
            floor = float(np.hypot(*(own - t_xy)))
            base = dict(pair=p, query=int(qi), target=int(ti), landmark=name, floor_px=floor)
            rows.append(
                dict(base, encoder=encoder, error_px=err, row=best // w, col=best % w,
                     sim=float(sims[best]))
            )  # fmt: skip
            if references:
                same = patch_centre(np.array([r, c]), size, grid)
                rows.append(
                    dict(base, encoder=SAME_POSITION, error_px=float(np.hypot(*(same - t_xy))),
                         row=r, col=c, sim=np.nan)
                )  # fmt: skip
                mean_d = float(np.hypot(*(centres - t_xy).T).mean())
                rows.append(
                    dict(base, encoder=RANDOM_PATCH, error_px=mean_d, row=-1, col=-1, sim=np.nan)
                )
    cols = ["encoder", "pair", "query", "target", "landmark", "error_px", "floor_px", "row",
            "col", "sim"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def summarize_errors(errors: pd.DataFrame, size: float) -> dict[str, dict]:
    """Per encoder: ``median_px``, ``mean_px``, ``std_px``, ``median_pct`` (of the image
    side), ``n``, ``floor_median_px`` and ``per_landmark`` ``{name: {median_px,
    mean_px}}``. JSON-ready."""
    out: dict[str, dict] = {}
    for enc, g in errors.groupby("encoder", sort=False):
        e = g["error_px"].to_numpy(float)
        per = {
            lm: {
                "median_px": float(np.median(s["error_px"])),
                "mean_px": float(s["error_px"].mean()),
            }
            for lm, s in g.groupby("landmark", sort=False)
        }
        out[str(enc)] = {
            "median_px": float(np.median(e)),
            "mean_px": float(e.mean()),
            "std_px": float(e.std()),
            "median_pct": float(100.0 * np.median(e) / size),
            "n": int(len(e)),
            "floor_median_px": float(np.median(g["floor_px"])),
            "per_landmark": per,
        }
    return out


def compare_medians(
    errors: pd.DataFrame, a: str, b: str, *, n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Median error of ``a`` minus that of ``b`` (pixels; < 0: ``a`` is closer), with a 95%
    bootstrap interval that resamples image pairs (both encoders see the same pairs).
    ``held`` = 1.0 when the whole interval is below 0."""
    ea = errors[errors["encoder"] == a].set_index(["pair", "landmark"])["error_px"]
    eb = errors[errors["encoder"] == b].set_index(["pair", "landmark"])["error_px"]
    both = pd.concat([ea.rename("a"), eb.rename("b")], axis=1, join="inner")
    if both.empty:
        raise ValueError(f"no (pair, landmark) measured for both {a!r} and {b!r}")
    pairs = both.index.get_level_values(0).to_numpy()
    uniq = np.unique(pairs)
    members = [np.flatnonzero(pairs == p) for p in uniq]
    va, vb = both["a"].to_numpy(), both["b"].to_numpy()
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for k in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(uniq), len(uniq))])
        diffs[k] = np.median(va[idx]) - np.median(vb[idx])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {
        "diff_px": float(np.median(va) - np.median(vb)),
        "lo_px": float(lo),
        "hi_px": float(hi),
        "held": float(hi < 0),
        "n": int(len(both)),
    }


def at_side(encoder: Any, side: int) -> Any:
    """``encoder`` run at input side ``side`` (0 or its own side: the encoder itself).

    A shallow copy shares the weights; the encoder passed in keeps its own preprocessing.
    """
    if not side or side == encoder.preprocess.image_size:
        return encoder
    return copy.copy(encoder).at_resolution(side)


def patch_grids(encoder: Any, root: str | Path, records: pd.DataFrame, cfg: Any) -> np.ndarray:
    """Last-layer patch embeddings ``[N, h, w, D]`` (float32) of ``records``, cached.

    The encoder runs at ``cfg.corr_image_size`` when that is set (position embeddings
    interpolated; the encoder passed in is not changed), else at its own input side.
    """
    from raddino_lib.eval.cache import cached_embeddings

    enc = at_side(encoder, int(getattr(cfg, "corr_image_size", 0) or 0))
    emb = cached_embeddings(
        enc,
        root,
        records,
        layers=(-1,),
        batch_size=cfg.embed_batch_size,
        progress=cfg.progress,
    )
    return emb["layer_-1"].astype(np.float32)


def measure_correspondences(
    grids: Mapping[str, np.ndarray],
    landmarks: pd.DataFrame,
    names: Sequence[str],
    pairs: np.ndarray,
    size: float,
) -> pd.DataFrame:
    """:func:`landmark_errors` of every encoder over the same pairs, the reference rows once
    (from the first encoder's grid)."""
    parts = [
        landmark_errors(g, landmarks, names, pairs, size, encoder=name, references=i == 0)
        for i, (name, g) in enumerate(grids.items())
    ]
    if not parts:
        raise ValueError("no encoder patch grids to measure")
    return pd.concat(parts, ignore_index=True)


# Example kinds for the figures: label -> {column: required value}.
EXAMPLE_KINDS: dict[str, dict[str, int]] = {
    "support devices": {"support_devices": 1},
    "effusion + opacity": {"pleural_effusion": 1, "lung_opacity": 1},
    "no finding": {"no_finding": 1},
    "pneumonia": {"pneumonia": 1},
    "nodule": {"nodule": 1},
}


def pick_examples(
    records: pd.DataFrame,
    n: int,
    labels: Sequence[str] = ("support devices", "effusion + opacity", "no finding"),
) -> pd.DataFrame:
    """The first ``n`` of ``labels``, each the first record of that kind whose subject is not
    already shown (falling back to any unused record when no record has that kind).

    Returns:
        frame with ``label`` and ``row`` (the record as a Series) per example.
    """
    used: set = set()
    out = []
    for label in list(labels)[: max(n, 1)]:
        want = EXAMPLE_KINDS.get(label)
        if want is None:
            raise ValueError(f"unknown example kind {label!r}; known: {list(EXAMPLE_KINDS)}")
        mask = pd.Series(True, index=records.index)
        for col, val in want.items():
            mask &= records[col] == val if col in records else False
        fresh = ~records["subject_id"].isin(used)
        hit = records[mask & fresh]
        if hit.empty:
            hit = records[fresh] if fresh.any() else records
        row = hit.iloc[0]
        used.add(row["subject_id"])
        out.append({"label": label, "row": row})
    return pd.DataFrame(out)


def pixel_patch_grid(images: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Raw pixels cut into the patch grid: ``[N, S, S]`` -> ``[N, h, w, (S/h) * (S/w)]``,
    each patch standardised (zero mean, unit norm), so its cosine similarity compares local
    appearance only: the reference an encoder's patch embedding has to beat."""
    n, s1, s2 = images.shape
    h, w = grid
    if s1 % h or s2 % w:
        raise ValueError(f"image side {(s1, s2)} is not a multiple of the grid {grid}")
    p = images.reshape(n, h, s1 // h, w, s2 // w).transpose(0, 1, 3, 2, 4).reshape(n, h, w, -1)
    p = p - p.mean(-1, keepdims=True)
    return p.astype(np.float32)


def side_agreement(
    errors: pd.DataFrame,
    landmarks: pd.DataFrame,
    size: float,
    grid: tuple[int, int],
    *,
    midline: str = "carina",
) -> dict[str, float]:
    """Share of best matches on the correct side of the target's midline, per encoder.

    The midline is the vertical through the target's ``midline`` landmark; the landmark
    itself is left out. 0.5 is what a matcher blind to left and right would score.
    """
    d = errors[(errors["landmark"] != midline) & (errors["row"] >= 0)]
    mid = landmarks[f"{midline}_x"].to_numpy(float)[d["target"].to_numpy()]
    true_x = np.array(
        [landmarks.iloc[t][f"{lm}_x"] for t, lm in zip(d["target"], d["landmark"], strict=True)],
        dtype=float,
    )
    match_x = patch_centre(np.stack([d["row"], d["col"]], -1), size, grid)[:, 0]
    ok = np.sign(match_x - mid) == np.sign(true_x - mid)
    return {
        str(k): float(v)
        for k, v in pd.Series(ok, index=d.index).groupby(d["encoder"]).mean().items()
    }
